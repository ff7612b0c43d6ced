"""Evaluate a 2D network: PCK@0.2 per joint and per stage on the LSP-extended validation
split, without and with fusion (our 3D model inside the loop), plus the time per crop.

Crops are cut from the photos without augmentation (a 1.6 x box around the labelled
joints; ``--cache`` uses a train-2d crop cache instead), so the score measures the network,
not a person detector. Joints are the ones each stage reports (its fused maps' when fusion
is on), as in the viewer and the exports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from poseviewer.paths import MODELS_DIR, shared_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--weights", default=str(MODELS_DIR / "cpm_default.safetensors"))
    parser.add_argument("--pose-model", default=str(MODELS_DIR / "pose3d_default.safetensors"),
                        help="our 3D model for the fused evaluation ('' to skip fusion)")
    parser.add_argument("--elevation-search", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="the 3D fit of the fused evaluation (and of --crowd) searches "
                        "the camera's elevation, as poseviewer estimate does (the default); "
                        "--no-elevation-search: the release's yaw-only fit")
    parser.add_argument("--data", default=str(shared_path("data", "lspet")))
    parser.add_argument("--cache", default=None,
                        help="evaluate on crops from this train-2d crop cache instead of "
                             "cutting them from the photos (faster, resampled twice)")
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2017, help="split seed (as in training)")
    parser.add_argument("--limit", type=int, default=None, help="first N validation images")
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--single-pass", action="store_true",
                        help="without the network's mirror test-time pass (if it has one)")
    parser.add_argument("--stages", type=int, default=None, metavar="K",
                        help="run only the network's first K stages (as 'poseviewer estimate "
                        "--stages K'; their PCK equals the full run's first K columns)")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="int8: the network's stage convolutions quantised with the "
                        "calibration shipped beside the weights (<weights stem>.int8"
                        ".safetensors; poseviewer.cnn.int8)")
    parser.add_argument("--crowd", action="store_true",
                        help="score crowded scenes composed from the validation photos "
                             "(2-4 labelled people side by side and overlapping) instead")
    parser.add_argument("--scenes", type=int, default=150,
                        help="--crowd: how many scenes (seeded: the same set every run)")
    parser.add_argument("--crowd-seed", type=int, default=22, help="--crowd: scene seed")
    parser.add_argument("--crowd-people", type=int, nargs=2, default=(2, 4),
                        metavar=("MIN", "MAX"),
                        help="--crowd: people per scene (1 1: the single-person reference)")
    parser.add_argument("--prior-outside", type=float, default=None,
                        help="--crowd: weight of the target prior's outside-the-box term "
                             "(default: the Estimator's)")
    parser.add_argument("--prior-neighbour", type=float, default=None,
                        help="--crowd: weight of its neighbours' term (default: the "
                             "Estimator's; 0 with --prior-outside 0 turns the prior off)")
    parser.add_argument("--baseline", action="store_true",
                        help="--crowd: first the same figures with the target prior off")
    parser.add_argument("--no-detector", action="store_true",
                        help="--crowd: score the given boxes only, not the detector path")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print tables."""
    import numpy as np
    import torch

    from poseviewer.cnn import WeightsError, load_cpm
    from poseviewer.lifting import load_pose_model
    from poseviewer.train2d.data import build_cache, load_annotations, load_cache, split_indices
    from poseviewer.train2d.evaluate import eval_crops, eval_crops_from_photos, evaluate

    torch.set_num_threads(args.threads)
    try:
        model = load_cpm(args.weights)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.single_pass:
        model.set_flip_test(False)
    from poseviewer.cnn.lifting_cpm import check_stages

    try:
        stages = check_stages(args.stages, model.config.num_stages)
    except ValueError as exc:
        print(f"error: --stages: {exc}", file=sys.stderr)
        return 2
    if args.precision == "int8":
        from poseviewer.cnn.int8 import attach_int8, calibration_path, load_int8

        try:
            attach_int8(model, load_int8(model, calibration_path(args.weights)))
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.crowd:
        from poseviewer.commands._crowd import run_crowd

        return run_crowd(args, model)
    have_data = (Path(args.data) / "annotations.npz").is_file()
    if args.cache:
        cache_dir = Path(args.cache)
        if not (cache_dir / "cache.json").is_file():
            if not have_data:
                print(f"error: LSP-extended not found in {args.data}", file=sys.stderr)
                return 2
            build_cache(args.data, cache_dir)
        cache = load_cache(cache_dir)
        _, val = split_indices(len(cache.images), args.n_val, args.seed)
        val = val[: args.limit] if args.limit else val
        crops = eval_crops(cache, val, model.config.input_size)
    else:
        if not have_data:
            print(f"error: LSP-extended not found in {args.data}", file=sys.stderr)
            return 2
        cache = None
        _, val = split_indices(len(load_annotations(args.data).names), args.n_val, args.seed)
        val = val[: args.limit] if args.limit else val
        crops = eval_crops_from_photos(args.data, val, model.config.input_size)
    report: dict = {"weights": str(args.weights), "config": model.config.name,
                    "flip_test": bool(model.config.flip_test), "precision": args.precision,
                    "stages": stages, "elevation_search": bool(args.elevation_search),
                    "split": {"n_val": args.n_val, "seed": args.seed, "images": len(val)}}
    runs = [("plain", None)]
    if args.pose_model and model.config.fusion.enabled:
        fused_model = load_pose_model(args.pose_model)
        fused_model.elevation_search = bool(args.elevation_search)
        runs.append(("fusion", fused_model))
    for name, pm in runs:
        model.attach_pose_model(pm)
        rep = evaluate(model, cache, val, alpha=args.alpha, crops=crops, stages=stages)
        x = torch.from_numpy(np.ascontiguousarray(crops[0][:1].transpose(0, 3, 1, 2))) / 255 - .5
        with torch.no_grad():
            model.eval()
            model(x, stages=stages)
            t0 = time.perf_counter()
            for _ in range(10):
                model(x, stages=stages)
            per_crop = (time.perf_counter() - t0) / 10
        d = rep.to_dict()
        d["seconds_per_crop"] = round(per_crop, 4)
        if pm is not None and model.fusion_logit is not None:
            d["fusion_weights"] = model.fusion_weights().detach().numpy().round(3).tolist()
        report[name] = d
        print(f"\n## PCK@{args.alpha} per joint and stage, {name} "
              f"({rep.people} people with a torso size, of {len(val)} images); "
              f"{per_crop * 1000:.1f} ms per crop (batch 1, {args.threads} thread(s))\n")
        print(rep.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0
