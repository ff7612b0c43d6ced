"""Exporters and importers of results (headless; no Qt). See docs/export-format.md.

Writers (all atomic: temp file beside the target, then ``os.replace``)::

    write_json(result, path)            our versioned JSON ("schema": "poseviewer.result")
    write_csv(result, path)             long format, one row per person/stage/component/joint
    write_npz(result, path, save_maps)  plain arrays, loads with allow_pickle=False
    write_bvh(result, path, person, stage, component, centre)   one pose, one frame
    write_coco(results, path, stage)    COCO keypoints JSON of the 2D joints
    export_result(result, out_dir, stem, formats)   several formats at once

Readers::

    read_json(path) / read_npz(path) -> EstimateResult
    read_joints_2d(path) -> [Imported2D]     (COCO-17 / CPM-14 keypoints or our JSON)
    lift_imported(item, model) -> EstimateResult;  load_pose_model(path)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from poseviewer.export._io import ExportError, ImportFormatError, fit_arrays
from poseviewer.export.bvh import bvh_text, write_bvh
from poseviewer.export.coco import coco_dict, write_coco
from poseviewer.export.csv_format import csv_text, write_csv
from poseviewer.export.importers import (
    DEFAULT_POSE_MODEL,
    Imported2D,
    lift_imported,
    load_pose_model,
    read_joints_2d,
)
from poseviewer.export.json_format import read_json, result_from_dict, result_to_dict, write_json
from poseviewer.export.npz_format import read_npz, result_arrays, write_npz
from poseviewer.result import EstimateResult

__all__ = [
    "DEFAULT_POSE_MODEL", "EXTENSIONS", "FORMATS", "ExportError", "ImportFormatError",
    "Imported2D", "bvh_text", "coco_dict", "csv_text", "export_result", "lift_imported",
    "load_pose_model", "parse_formats", "read_joints_2d", "read_json", "read_npz",
    "result_arrays", "result_from_dict", "result_to_dict", "write_bvh", "write_coco",
    "write_csv", "write_json", "write_npz",
]

#: format name -> file suffix (BVH: one file per lifted person, ``<stem>_person<P>.bvh``)
EXTENSIONS: dict[str, str] = {
    "json": ".json", "csv": ".csv", "npz": ".npz", "bvh": ".bvh", "coco": ".coco.json",
}
FORMATS: tuple[str, ...] = tuple(EXTENSIONS)


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """'json,csv' (or a list) -> ('json', 'csv'); ValueError naming unknown formats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip().lower() for s in items if s.strip()]
    bad = [n for n in names if n not in EXTENSIONS]
    if bad or not names:
        raise ValueError(f"unknown export format(s) {', '.join(bad) or '(none given)'}; "
                         f"choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(names))


def export_result(result: EstimateResult, out_dir: str | os.PathLike[str], stem: str,
                  formats: Iterable[str] = FORMATS, save_maps: bool = False) -> list[Path]:
    """Write ``result`` in each format into ``out_dir`` as ``<stem><suffix>``; returns the
    files written. BVH: the final stage's best component of every lifted person."""
    out = Path(out_dir)
    written: list[Path] = []
    for fmt in parse_formats(list(formats)):
        if fmt == "json":
            written.append(write_json(result, out / f"{stem}.json"))
        elif fmt == "csv":
            written.append(write_csv(result, out / f"{stem}.csv"))
        elif fmt == "npz":
            written.append(write_npz(result, out / f"{stem}.npz", save_maps=save_maps))
        elif fmt == "coco":
            written.append(write_coco(result, out / f"{stem}.coco.json"))
        elif fmt == "bvh":
            for p, person in enumerate(result.persons):
                fa = fit_arrays(person.final)
                if fa is not None and bool(fa["lifted"]):
                    written.append(write_bvh(result, out / f"{stem}_person{p}.bvh", person=p))
    return written
