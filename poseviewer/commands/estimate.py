"""Estimate 2D and 3D poses for image files and folders and export them.

Examples:
  poseviewer estimate photo.jpg --out results/
  poseviewer estimate photos/ more.png --out results/ --format json,csv,npz,bvh,coco

  poseviewer estimate clip.mp4 --out results/ --format json,npz,csv,bvh,coco --every 2

Folders are searched recursively for images (.jpg .jpeg .png .bmp .tif .tiff .webp) and
videos (.mp4 .avi .mov .mkv .webm ...). Per video: <name>.json / .npz / .csv with a frame
axis and person ids, <name>.coco.json (one image per frame) and <name>_person<ID>.bvh, one
animation per person id (--every N, --max-frames M, --no-smoothing, --min-track-frames M,
--keep-maps, --stage-fits). A video's files are written as its frames come, in
<name>.partial/ until the end (bounded memory); an interrupted run keeps that folder and
--resume continues it.
Per image: <name>.json / .csv / .npz and <name>_person<P>.bvh in --out (images found in
sub-folders are named <sub>__<name>; repeated names get _2, _3, ...); the COCO keypoints
of all images go to keypoints_coco.json. A file that fails is reported and skipped;
report.json in --out lists every input's outcome and poses.parquet holds every photo's
people's 2D and 3D joints (every engine; not written when no photo succeeded). Exit
codes: below.

Engines (photos; videos always run here, one at a time): local (default; images decoded
in --workers processes, --batch-size images per network batch), ray (a Ray Data pipeline
on this machine or --ray-address; --num-gpus G GPU actors), plain (one image at a time).
--resume skips inputs whose files exist.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from poseviewer.commands._batch import (
    OutputFolderError,
    add_elevation_argument,
    add_fov_argument,
    add_output_arguments,
    check_out_dir,
    make_out_dir,
    missing_inputs,
)
from poseviewer.commands._engines import add_engine_arguments, engine_for
from poseviewer.commands._options import EstimateOptions, UsageError, load_estimator
from poseviewer.commands._pipeline import run_pipeline
from poseviewer.commands._video import add_video_arguments
from poseviewer.imageio import IMAGE_EXTENSIONS
from poseviewer.video.source import is_video_path

__all__ = ["add_arguments", "collect_images", "load_estimator", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``poseviewer estimate``."""
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="image and video files and folders (searched recursively)")
    add_output_arguments(parser)
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda (default: the estimator's)")
    parser.add_argument("--model", "--pose-model", dest="pose_model", type=Path, default=None,
                        metavar="PATH", help="3D pose model (.safetensors or the released .mat; "
                        "default: the bundled one)")
    parser.add_argument("--weights", type=Path, default=None, metavar="PATH",
                        help="CNN weights (default: the bundled ones)")
    parser.add_argument("--person-weights", type=Path, default=None, metavar="PATH",
                        help="PersonNet weights (e.g. release_personnet.safetensors from "
                        "'poseviewer convert-release'): find people with it")
    parser.add_argument("--bf16", action="store_true",
                        help="run the CNN under bfloat16 autocast (faster on GPUs and CPUs "
                        "with native bf16, e.g. AVX512-BF16/AMX; elsewhere a warning and "
                        "float32; slightly different maps)")
    parser.add_argument("--single-pass", action="store_true",
                        help="run the 2D network once per crop, without its mirror "
                        "test-time augmentation (about twice as fast; the default network's "
                        "PCK drops by about 1.5 points)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default=None,
                        help="int8: run the 2D network's stage convolutions quantised "
                        "(CPU, x86 backend; calibration shipped beside the weights; see "
                        "docs/video.md); default fp32")
    parser.add_argument("--stages", type=int, default=None, metavar="K",
                        help="run only the 2D network's first K stages (faster: the later "
                        "stages' heads, fusion and lifting are skipped; the results hold K "
                        "stages; default all; see docs/video.md for the accuracy cost)")
    add_elevation_argument(parser)
    add_fov_argument(parser)
    parser.add_argument("--no-target-prior", action="store_true",
                        help="do not weight each person's belief maps by whom the crop is "
                        "about (by default evidence nearer another person's box than the "
                        "person's own counts less)")
    parser.add_argument("--save-maps", action="store_true",
                        help="also store the belief maps in the NPZ files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(parser)
    add_video_arguments(parser)


def collect_images(paths: list[Path]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """(image path, output stem) for every file and every image under every folder, and
    (path, problem) for paths that do not exist or folders without images."""
    found: list[tuple[Path, str]] = []
    problems: list[tuple[str, str]] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and (
                p.suffix.lower() in IMAGE_EXTENSIONS or is_video_path(p)))
            if not files:
                problems.append((str(path), "folder holds no images or videos"))
            for f in files:
                found.append((f, str(f.relative_to(path).with_suffix(""))))
        elif path.is_file():
            found.append((path, path.stem))
        else:
            problems.append((str(path), "no such file or folder"))
    return found, problems


def run(args: argparse.Namespace) -> int:
    """Run ``poseviewer estimate``; returns the exit code. The options are parsed once
    (:class:`EstimateOptions`); the photos and videos then go through one pipeline
    (commands/_pipeline.py), the photos mapped by the chosen engine (commands/_engines.py)."""
    try:
        opts = EstimateOptions.from_args(args)
    except UsageError as exc:
        print(f"poseviewer estimate: {exc}", file=sys.stderr)
        return 2
    files, problems = collect_images(list(opts.paths))
    if problems:  # a missing path: a usage error even among good ones (exit 2, nothing run)
        return missing_inputs("estimate", problems)
    out = opts.output.out
    try:  # the output folder first, then the models; the folder is made only after both
        check_out_dir(out)
        estimator = load_estimator(opts.estimator)
        make_out_dir(out)
    except OutputFolderError as exc:
        print(f"poseviewer estimate: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - any model/setup failure is reported, exit 2
        print(f"poseviewer estimate: cannot start: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
    for note in getattr(estimator, "notes", []):
        print(f"poseviewer estimate: {note}", file=sys.stderr)
    return run_pipeline(opts, estimator, engine_for(opts.engine, opts.estimator), files)
