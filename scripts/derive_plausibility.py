#!/usr/bin/env python3
"""Derive the plausibility limits (``poseviewer.lifting.plausibility``) and store them in
``resources/models/plausibility.json``.

Bone ranges: the Human3.6M training subjects' poses (``../shared/data/h36m``). Limits: the
0.99 quantile of the bone excess and of the best residual when the default 3D model lifts
the labelled 2D joints of the LSP-extended validation split (real people) with the fit that
``poseviewer estimate``, ``lift``, the viewer and ``Estimator`` use by default: the
elevation search (``elevation_search = True``).

  .venv/bin/python scripts/derive_plausibility.py            # write the file
  .venv/bin/python scripts/derive_plausibility.py --check    # compare with the stored one
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from poseviewer.atomic import atomic_write_text  # noqa: E402
from poseviewer.lifting import load_pose_model  # noqa: E402
from poseviewer.lifting.plausibility import (  # noqa: E402
    PLAUSIBILITY_FILE,
    TRAIN_SUBJECTS,
    PlausibilityLimits,
    derive_limits,
    training_ranges,
)
from poseviewer.paths import DEFAULT_POSE_MODEL, shared_path  # noqa: E402
from poseviewer.train2d.data import load_annotations, split_indices  # noqa: E402


def derive(quantile: float = 0.99, n_val: int = 1000, seed: int = 2017) -> PlausibilityLimits:
    """The limits from the shared data and the default 3D model."""
    with np.load(shared_path("data", "h36m", "h36m_3d_17j_10hz.npz")) as d:
        typical, lo, hi = training_ranges(d["poses"], d["subject"])
    ann = load_annotations(shared_path("data", "lspet"))
    _, val = split_indices(len(ann.names), n_val, seed)
    model = load_pose_model(DEFAULT_POSE_MODEL)
    model.elevation_search = True  # the default fit (the model alone defaults to yaw-only)
    fit = model.lift(ann.joints[val].astype(np.float64), ann.visible[val], as_numpy=True)
    ok = np.asarray(fit.lifted, bool)
    best = np.asarray(fit.component)
    residual = np.take_along_axis(np.asarray(fit.components.residual), best[:, None], 1)[:, 0]
    pose = np.asarray(fit.pose_3d)[ok]
    return derive_limits(typical, lo, hi, pose, residual[ok], quantile, source={
        "ranges": f"Human3.6M subjects {list(TRAIN_SUBJECTS)}",
        "limits": f"labelled 2D joints of the LSP-extended validation split "
                  f"(split_indices(9000, {n_val}, {seed})), lifted by "
                  f"{DEFAULT_POSE_MODEL.name} with the elevation search: {int(ok.sum())} "
                  f"of {len(val)} lifted",
        "command": "python scripts/derive_plausibility.py"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the stored file")
    ap.add_argument("--out", default=str(PLAUSIBILITY_FILE))
    args = ap.parse_args()
    lim = derive()
    print(f"limb bone limits: {lim.long_limit:.4f} x longer, {lim.short_limit:.4f} x "
          f"shorter than the training range; residual limit {lim.residual_limit:.6g} "
          f"(quantile {lim.quantile}); {lim.source['limits']}")
    if args.check:
        stored = PlausibilityLimits.load(args.out)
        same = np.allclose([stored.long_limit, stored.short_limit, stored.residual_limit],
                           [lim.long_limit, lim.short_limit, lim.residual_limit], rtol=1e-6)
        print("stored file matches" if same else "stored file DIFFERS")
        return 0 if same else 1
    atomic_write_text(Path(args.out), lim.to_json() + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
