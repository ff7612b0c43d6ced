"""Calibrate the int8 convolutions of a 2D network (``poseviewer.cnn.int8``) on training
crops of LSP-extended and write the calibration file beside the weights.

The crops are the evaluation crops (a 1.6 x box around the labelled joints, no
augmentation) of ``--images`` photos drawn (seeded) from the *training* split; each goes
through the whole network (every stage, single pass and mirrored) while histogram observers
record every quantised activation; their scales are then stored as (min, max) per observer
(safetensors, ``<weights stem>.int8.safetensors``). Nothing reads ../shared at run time:
the app loads the shipped file.

    .venv/bin/python scripts/calibrate_int8.py [--weights resources/models/cpm_default.safetensors]
        [--images 256] [--seed 0] [--trunk] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poseviewer.cnn import load_cpm  # noqa: E402
from poseviewer.cnn.int8 import (  # noqa: E402
    ENGINE,
    Int8Parts,
    attach_int8,
    calibration_path,
    save_calibration,
)
from poseviewer.paths import DEFAULT_CNN, shared_path  # noqa: E402
from poseviewer.train2d.data import load_annotations, split_indices  # noqa: E402
from poseviewer.train2d.evaluate import eval_crops_from_photos  # noqa: E402
from poseviewer.train2d.targets import normalise  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=DEFAULT_CNN)
    ap.add_argument("--data", type=Path, default=shared_path("data", "lspet"))
    ap.add_argument("--images", type=int, default=256, help="training photos to calibrate on")
    ap.add_argument("--seed", type=int, default=0, help="which training photos (seeded draw)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--trunk", action="store_true",
                    help="quantise the trunk too (default: the stage heads only; the int8 "
                    "trunk cost ~1.5 PCK points more for little speed)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: <weights stem>.int8.safetensors beside the weights")
    args = ap.parse_args()
    if not (args.data / "annotations.npz").is_file():
        print(f"error: LSP-extended not found in {args.data}", file=sys.stderr)
        return 2
    torch.backends.quantized.engine = ENGINE
    model = load_cpm(args.weights).eval()
    cfg = model.config
    train, _ = split_indices(len(load_annotations(args.data).names), 1000, 2017)
    idx = np.sort(np.random.default_rng(args.seed).choice(train, args.images, replace=False))
    t0 = time.perf_counter()
    crops, _, _ = eval_crops_from_photos(str(args.data), idx, cfg.input_size)
    parts = Int8Parts(model, trunk=args.trunk)
    attach_int8(model, parts)
    with torch.inference_mode():
        for flip in (False, True):
            model.set_flip_test(flip)
            for k in range(0, len(crops), args.batch):
                x = normalise(crops[k:k + args.batch], cfg.norm_scale, cfg.norm_offset,
                              cfg.channel_order)
                model(x.contiguous(memory_format=torch.channels_last))
    out = args.out or calibration_path(args.weights)
    info = {"weights": Path(args.weights).name, "images": int(args.images),
            "seed": int(args.seed), "split": "LSP-extended training split "
            "(split_indices(9000, 1000, 2017)), evaluation crops (1.6 x joint box)",
            "observer": "histogram (x86 default qconfig: activations quint8 reduce_range, "
            "weights qint8 per channel)", "torch": torch.__version__}
    save_calibration(parts, out, info)
    print(f"{len(parts.ranges())} activation ranges from {args.images} training crops "
          f"(+ mirrored) in {time.perf_counter() - t0:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
