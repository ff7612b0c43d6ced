"""Train the default 2D network (lifting CPM) on LSP-extended (recipe: docs/training.md).

Builds the pre-cropped image cache on first use, then trains with checkpoints every epoch
in the run folder (outside the repository), a JSON-lines log and a PNG plot. The last
epochs run with our 3D model inside the loop (fusion); resume with --resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from poseviewer.paths import shared_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--data", default=str(shared_path("data", "lspet")),
                        help="LSP-extended folder (annotations.npz + images/)")
    parser.add_argument("--cache", default="/work/scratch/train2d/cache192",
                        help="crop cache folder (built if absent)")
    parser.add_argument("--cache-size", type=int, default=192)
    parser.add_argument("--out", required=True, help="run folder (checkpoints, log, plot)")
    parser.add_argument("--preset", default="cpm-default")
    parser.add_argument("--epochs", type=int, default=24,
                        help="epochs (a maximum when --time-budget is given)")
    parser.add_argument("--fusion-epochs", type=int, default=5)
    parser.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                        help="minutes of training; LR and fusion start follow the budget")
    parser.add_argument("--fusion-fraction", type=float, default=0.22)
    parser.add_argument("--pose-model", default=None,
                        help="our 3D model (.safetensors) for the fusion epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 0 = adaptive (tries 1 and 2 as the load changes)")
    parser.add_argument("--max-batches", type=int, default=None, help="per epoch (smoke runs)")
    parser.add_argument("--val-limit", type=int, default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the run folder")
    parser.add_argument("--init", default=None, metavar="WEIGHTS",
                        help="start from this CPM weights file (e.g. convert-tfjs output) "
                             "instead of --preset")
    parser.add_argument("--trunk-lr", type=float, default=None,
                        help="peak learning rate of a pretrained trunk (default: --lr)")
    parser.add_argument("--fusion-lr", type=float, default=1e-2)
    parser.add_argument("--no-batchnorm", action="store_true",
                        help="train without BatchNorm (pretrained trunks, softmax maps)")
    parser.add_argument("--neighbours", type=float, default=0.0, metavar="P",
                        help="probability of pasting other training people beside and over "
                             "a sample, their labels dropped (training with neighbours)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Build the cache if needed and train."""
    from poseviewer.train2d.data import build_cache
    from poseviewer.train2d.loop import NeedPoseModel, TrainConfig, train

    cache = Path(args.cache)
    if not (cache / "cache.json").is_file():
        data = Path(args.data)
        if not (data / "annotations.npz").is_file():
            print(f"error: LSP-extended not found in {data} (need annotations.npz and "
                  "images/)", file=sys.stderr)
            return 2
        build_cache(data, cache, size=args.cache_size, progress=not args.no_progress)
    cfg = TrainConfig(
        cache_dir=str(cache), out_dir=args.out, preset=args.preset, epochs=args.epochs,
        fusion_epochs=args.fusion_epochs, pose_model=args.pose_model,
        batch_size=args.batch_size, lr=args.lr, threads=args.threads,
        max_batches=args.max_batches, val_limit=args.val_limit,
        progress=not args.no_progress, time_budget_min=args.time_budget,
        fusion_fraction=args.fusion_fraction, init=args.init, trunk_lr=args.trunk_lr,
        fusion_lr=args.fusion_lr, batchnorm=not args.no_batchnorm,
        neighbours=args.neighbours)
    try:
        out = train(cfg, resume=args.resume)
    except NeedPoseModel as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 3
    print(f"done: {out}")
    return 0
