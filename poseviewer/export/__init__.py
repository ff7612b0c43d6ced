"""Exporters and importers of results (headless: numpy only, no Qt, no torch). See
docs/export-format.md; every format follows the field table of :mod:`poseviewer.result`.

Writers (all atomic: temp file beside the target, then ``os.replace``; 3D poses
root-relative unless ``frame='lifting'``)::

    write_json(result, path)            our versioned JSON ("schema": "poseviewer.result")
    write_csv(result, path)             long format, one row per person/stage/component/joint
    write_npz(result, path, save_maps)  plain arrays, loads with allow_pickle=False
    write_bvh(result, path, person, stage, component)   one pose, one frame, root at 0
    write_coco(results, path, stage)    COCO keypoints JSON of the 2D joints
    export_result(result, out_dir, stem, formats)   several formats at once
    export_sequence(seq, out_dir, stem, formats)    a video's results (frame axis, ids;
                                        one BVH animation per person id)
    EXPORTERS                           the format registry (CLI --format, File menu)

Readers::

    read_json(path) / read_npz(path) -> EstimateResult
    read_sequence_json(path) / read_sequence_npz(path) -> ResultSequence
    read_joints_2d(path) -> [Imported2D]     (COCO-17 / CPM-14 keypoints or our JSON)
    lift_imported(item, model) -> EstimateResult   (model: poseviewer.lifting.load_pose_model)
"""

from __future__ import annotations

from poseviewer.export._io import DEFAULT_FRAME, ExportError, ImportFormatError, in_frame
from poseviewer.export.bvh import bvh_text, write_bvh
from poseviewer.export.coco import coco_dict, write_coco
from poseviewer.export.csv_format import csv_text, write_csv
from poseviewer.export.importers import Imported2D, lift_imported, read_joints_2d
from poseviewer.export.json_format import read_json, result_from_dict, result_to_dict, write_json
from poseviewer.export.npz_format import read_npz, result_arrays, write_npz
from poseviewer.export.registry import (
    EXPORTERS,
    EXTENSIONS,
    FORMATS,
    Exporter,
    ExportOptions,
    export_result,
    export_sequence,
    formats_help,
    parse_formats,
)
from poseviewer.export.video import (
    TrackAnimation,
    bvh_animation_text,
    read_sequence_json,
    read_sequence_npz,
    track_animation,
    track_animations,
    write_sequence_coco,
    write_sequence_csv,
    write_sequence_json,
    write_sequence_npz,
)

__all__ = [
    "DEFAULT_FRAME", "EXPORTERS", "EXTENSIONS", "FORMATS", "ExportError", "ExportOptions",
    "Exporter", "ImportFormatError", "Imported2D", "bvh_text", "coco_dict", "csv_text",
    "export_result", "formats_help", "in_frame", "lift_imported", "parse_formats",
    "read_joints_2d", "read_json", "read_npz", "result_arrays", "result_from_dict",
    "result_to_dict", "write_bvh", "write_coco", "write_csv", "write_json", "write_npz",
    "TrackAnimation", "bvh_animation_text", "export_sequence", "read_sequence_json",
    "read_sequence_npz", "track_animation", "track_animations", "write_sequence_coco",
    "write_sequence_csv", "write_sequence_json", "write_sequence_npz",
]
