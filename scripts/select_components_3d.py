#!/usr/bin/env python
"""Choose the 3D pose model's number of mixture components K by held-out likelihood.

    .venv/bin/python scripts/select_components_3d.py [--components 2 3 4 5 6 7 8]
        [--train-subjects 1,5,6,7] [--val-subjects 8] [--basis 25] [--seed 0] [--no-mirror]

For each K the mixture of PPCA is trained exactly as ``poseviewer train-3d`` trains it
(canonical yaw, mirrored poses added unless ``--no-mirror``, EM from seed 0) on the
training subjects only, and scored by the mean log-likelihood (nats per pose vector) of the
held-out subject's poses, preprocessed the same way (with their mirrors: the model is meant
to be mirror-symmetric). Only the training subjects 1, 5, 6, 7, 8 are used: S9 and S11 stay
the test set. Prints a Markdown table and the K with the best held-out likelihood.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poseviewer.train3d import (  # noqa: E402
    load_h36m,
    log_likelihood,
    pose_vectors,
    train_pose_model,
)


def _subjects(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def main() -> int:
    """Train one model per K, score the held-out subject, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8])
    ap.add_argument("--train-subjects", default="1,5,6,7")
    ap.add_argument("--val-subjects", default="8")
    ap.add_argument("--basis", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mirror", action="store_true")
    ap.add_argument("--data", default=None, help="Human3.6M 3D poses .npz (default: ../shared)")
    args = ap.parse_args()
    tr_s, va_s = _subjects(args.train_subjects), _subjects(args.val_subjects)
    if set(tr_s) & set(va_s) or set(tr_s + va_s) & {9, 11}:
        ap.error("training and held-out subjects must differ and exclude the test set 9, 11")
    mirror = not args.no_mirror
    train, _, _ = load_h36m(args.data, tr_s)
    val, _, _ = load_h36m(args.data, va_s)
    y_val = pose_vectors(val, mirror)
    print(f"training subjects {tr_s}: {len(train)} poses; held out {va_s}: {len(val)} poses "
          f"({len(y_val)} vectors); mirrored: {mirror}; B = {args.basis}, seed {args.seed}")
    print("\n| K | EM iterations | training log-lik / vector | held-out log-lik / vector "
          "| held-out gain over K-1 | mixing weights | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for k in args.components:
        t0 = time.perf_counter()
        rep = train_pose_model(train, n_components=k, n_basis=args.basis, seed=args.seed,
                               mirror_augment=mirror, progress=False)
        held = float(log_likelihood(rep.fit, y_val).mean())
        gain = "" if not rows else f"{held - rows[-1][1]:+.3f}"
        rows.append((k, held))
        w = " ".join(f"{x:.2f}" for x in rep.meta["mixing_weights"])
        print(f"| {k} | {rep.fit.n_iter} | {rep.fit.log_likelihood[-1]:.3f} | {held:.3f} "
              f"| {gain} | {w} | {time.perf_counter() - t0:.0f} |", flush=True)
    best = max(rows, key=lambda r: r[1])
    print(f"\nbest held-out likelihood: K = {best[0]} ({best[1]:.3f} nats / vector)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
