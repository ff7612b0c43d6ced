"""Lift imported 2D joints (COCO-style keypoints or our JSON) to 3D without the CNN.

Examples:
  poseviewer lift people_coco.json --out results/ --format json,bvh
  poseviewer lift detections.json --out results/ --model prob_model_params.mat

Each input may hold several images; every image gives one result (no belief maps, one
stage) exported in every chosen format. COCO-17 input: the neck is the shoulders'
midpoint and the head top is unknown. Exit codes: below.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from poseviewer.camera import DEFAULT_FOV_DEG, imported_lifter
from poseviewer.commands._batch import (
    CocoCollector,
    OutputFolderError,
    Report,
    UniqueStems,
    add_elevation_argument,
    add_fov_argument,
    add_output_arguments,
    check_out_dir,
    finish_batch,
    implausible_count,
    make_out_dir,
    missing_inputs,
)
from poseviewer.export import EXPORTERS, export_result, lift_imported, parse_formats, read_joints_2d
from poseviewer.lifting.plausibility import PLAUSIBILITY_FILE, PlausibilityLimits, judge_result
from poseviewer.paths import DEFAULT_POSE_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``poseviewer lift``."""
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="JSON files: COCO-style keypoints or poseviewer results")
    add_output_arguments(parser)
    parser.add_argument("--model", type=Path, default=None, metavar="PATH",
                        help=f"3D pose model: our .safetensors or the released .mat "
                        f"(default: {DEFAULT_POSE_MODEL.name})")
    parser.add_argument("--layout", choices=("coco17", "cpm14"), default=None,
                        help="force the COCO keypoint layout (default: from the file)")
    add_elevation_argument(parser)
    add_fov_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``poseviewer lift``; returns the exit code."""
    from poseviewer.lifting import load_pose_model  # torch: only when running

    missing = [(str(p), "no such file") for p in args.inputs if not p.is_file()]
    if missing:  # a missing path: a usage error even among good ones (exit 2, nothing run)
        return missing_inputs("lift", missing)
    try:  # the output folder first, then the model; the folder is made only after both
        formats = parse_formats(args.format)
        check_out_dir(args.out)
        model = load_pose_model(args.model)
        model.elevation_search = bool(getattr(args, "elevation_search", True))
        make_out_dir(args.out)
    except (OutputFolderError, ValueError, OSError) as exc:  # bad format, folder or model
        print(f"poseviewer lift: {exc}", file=sys.stderr)
        return 2
    model_path = str(args.model or DEFAULT_POSE_MODEL)
    fov = DEFAULT_FOV_DEG if getattr(args, "fov", None) is None else args.fov
    per_image = [f for f in formats if not EXPORTERS[f].collect]
    report = Report("lift", args.out)
    limits = PlausibilityLimits.load() if PLAUSIBILITY_FILE.is_file() else None
    coco = CocoCollector()
    stems = UniqueStems()
    interrupted = False
    try:
        for src in args.inputs:
            try:
                items = read_joints_2d(src, layout=args.layout)
            except (ValueError, OSError) as exc:
                report.failure(src, exc)
                continue
            for i, item in enumerate(items):
                label = str(item.image or i) if len(items) > 1 else None
                try:
                    lifter, note = imported_lifter(model, fov, item.image_size)
                    result = lift_imported(item, lifter, model_path=model_path)
                    if note:
                        result.messages.append(note)
                    judge_result(result, limits)
                    base = Path(item.image).stem if item.image else src.stem
                    written = export_result(result, args.out, stems(base), per_image,
                                            frame=args.frame)
                    if "coco" in formats:
                        coco.add(result)
                    report.success(src, written, len(result.persons), result.messages,
                                   implausible_count(result), item=label)
                except (ValueError, OSError, RuntimeError) as exc:
                    report.failure(src, exc, item=label)
    except KeyboardInterrupt:
        interrupted = True
    return finish_batch(report, coco, args.out, interrupted)
