#!/usr/bin/env python
"""Learn the lifting's head-top offset from LSP-extended training labels, and measure it.

    .venv/bin/python scripts/head_top_offset.py [--model PATH] [--train N] [--val N]
                                                [--offsets 0 0.25 ...]

The CPM head top is LSP's top of the head; the 3D model's H36M-17 "head" joint is the
middle of the head. The elevation grid's fit observes the head top as head + a x (head -
thorax), beyond the head along the neck (``PoseModel3D.head_top_offset``,
``spec.HEAD_TOP_OFFSET``). For each offset a
on the list, the labels of the fixed training split (``train2d.data.split_indices``) are
lifted (visible joints only) and projected back (``fit.joints_2d``, whose head slot is the
projected head top); the head top's bias is the mean of (label - projection) along the
label's neck -> head-top direction, in torso lengths (|left shoulder - right hip|, as
PCK): positive = the projection sits too low. The offset where the bias crosses 0
(linear interpolation between the grid's values) is chosen, through the fit's own
residual: the fit sees the offset head top. Then on the validation split: the bias, and
the PCK@0.2 of the labels' own projection (every joint; ``train2d.evaluate.pck``; also the
head top alone and the other 13 joints), for offset 0, for the chosen one, and for the
yaw-only fit (``elevations = (0,)``, which observes the head itself).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poseviewer.lifting import load_pose_model  # noqa: E402
from poseviewer.paths import MODELS_DIR, shared_dir  # noqa: E402
from poseviewer.skeleton import CPM14, h36m_to_cpm  # noqa: E402
from poseviewer.train2d.data import load_annotations, split_indices  # noqa: E402
from poseviewer.train2d.evaluate import LSHO, RHIP, pck  # noqa: E402

HT, NECK = CPM14.index("head_top"), CPM14.index("neck")


def project_labels(model, joints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, 14, 2) the lifted labels' projection in CPM-14 order (NaN where not lifted)."""
    out = np.empty(joints.shape)
    for i in range(0, len(joints), 512):
        fit = model.lift(joints[i : i + 512], visible[i : i + 512], as_numpy=True)
        out[i : i + 512] = h36m_to_cpm(np.asarray(fit.joints_2d))
    return out


def head_top_bias(proj: np.ndarray, joints: np.ndarray, visible: np.ndarray) -> float:
    """Mean (label - projection) . unit(label neck -> head top) / torso over the people
    with head top, neck, left shoulder and right hip labelled (torso lengths)."""
    torso = np.linalg.norm(joints[:, LSHO] - joints[:, RHIP], axis=-1)
    ok = visible[:, [HT, NECK, LSHO, RHIP]].all(1) & (torso > 0)
    ok &= np.isfinite(proj[:, HT]).all(-1)
    up = joints[ok, HT] - joints[ok, NECK]
    up /= np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-9)
    d = ((joints[ok, HT] - proj[ok, HT]) * up).sum(-1) / torso[ok]
    return float(d.mean())


def label_pck(proj: np.ndarray, joints: np.ndarray, visible: np.ndarray
              ) -> tuple[float, float, float]:
    """PCK@0.2 of the projection against the labels: (every joint, the head top, the other
    13 joints)."""
    correct, evaluated = pck(proj, joints, visible)
    rest = np.arange(correct.shape[-1]) != HT
    return (float(correct.sum() / evaluated.sum()),
            float(correct[:, HT].sum() / evaluated[:, HT].sum()),
            float(correct[:, rest].sum() / evaluated[:, rest].sum()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODELS_DIR / "pose3d_default.safetensors")
    ap.add_argument("--train", type=int, default=2000, help="training labels used (0: all)")
    ap.add_argument("--val", type=int, default=0, help="validation labels used (0: all)")
    ap.add_argument("--offsets", type=float, nargs="+",
                    default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    args = ap.parse_args()
    ann = load_annotations(shared_dir() / "data" / "lspet")
    tr, va = split_indices(len(ann.names))
    if args.train:
        tr = tr[np.linspace(0, len(tr) - 1, args.train).astype(int)]
    if args.val:
        va = va[: args.val]
    j, v = ann.joints.astype(np.float64), ann.visible
    model = load_pose_model(args.model)
    model.elevation_search = True  # the grid's fit (the default is the yaw-only one)
    print(f"model {args.model.name}; {len(tr)} training labels, {len(va)} validation labels")
    biases = []
    for a in args.offsets:
        model.head_top_offset = a
        proj = project_labels(model, j[tr], v[tr])
        biases.append(head_top_bias(proj, j[tr], v[tr]))
        allp, htp, rest = label_pck(proj, j[tr], v[tr])
        print(f"offset {a:5.2f}: training head-top bias {biases[-1]:+.4f} torso lengths, "
              f"labels' projection PCK@0.2 {allp * 100:.2f} % (head top {htp * 100:.1f} %, "
              f"the other 13 joints {rest * 100:.2f} %)")
    b = np.array(biases)
    cross = np.flatnonzero(np.sign(b[:-1]) != np.sign(b[1:]))
    if not len(cross):
        chosen = float(np.asarray(args.offsets)[np.abs(b).argmin()])
    else:
        i = int(cross[0])
        a0, a1 = args.offsets[i], args.offsets[i + 1]
        chosen = float(a0 + (a1 - a0) * b[i] / (b[i] - b[i + 1]))
    print(f"chosen offset (training bias 0): {chosen:.3f}; validated at {chosen:.2f}")
    chosen = round(chosen, 2)  # as spec.HEAD_TOP_OFFSET keeps it
    level = load_pose_model(args.model)
    level.elevations = (0.0,)
    print("validation split:")
    for name, m, a in (("yaw-only fit (the release's observation)", level, 0.0),
                       ("elevation grid, offset 0", model, 0.0),
                       (f"elevation grid, offset {chosen:.2f}", model, chosen)):
        m.head_top_offset = a
        proj = project_labels(m, j[va], v[va])
        allp, htp, rest = label_pck(proj, j[va], v[va])
        print(f"  {name}: head-top bias {head_top_bias(proj, j[va], v[va]):+.4f} torso "
              f"lengths; labels' projection PCK@0.2 {allp * 100:.2f} % (head top "
              f"{htp * 100:.1f} %, the other 13 joints {rest * 100:.2f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
