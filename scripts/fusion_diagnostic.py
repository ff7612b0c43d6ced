#!/usr/bin/env python
"""What the fusion could do, per part, on the validation split: the paper's claim tested.

    .venv/bin/python scripts/fusion_diagnostic.py [--elevation-search] [--limit N]
        [--stage -1] [--peaks 3] [--window 2] [--floor 0.05] [--single-pass]

On the fixed 1,000-image LSP-extended validation split (``train2d.data.split_indices``,
crops cut from the photos around the labels as ``poseviewer eval-2d`` cuts them), for each
of the 14 CPM parts:

- **labels' projection PCK**: the labels (their labelled joints) lifted by the 3D model
  and projected back (``fit.joints_2d``), PCK@0.2 against the labels themselves: how close
  the 3D model can come to a right 2D pose at all; and the head top's bias (label minus
  projection along the label's neck -> head-top direction, torso lengths, positive = too
  low), as ``scripts/head_top_offset.py`` measures it;
- **the map's top peaks** (``poseviewer.cnn.peaks.top_peaks``: local maxima in a
  (2 window + 1)^2 square, at least ``floor`` x the map's maximum, highest first) of the
  chosen stage's CNN maps b_t, with the default network running as shipped (fusion on);
  a peak is *right* when it lies within 0.2 torso of the label (PCK's test);
- **which peak the 3D fit prefers**: the fusion's own lift at that stage (the CNN's joints
  lifted, the best component projected: the centres of the Gaussians it fuses) is closest
  to one of the top peaks; the fit *prefers* that peak when it lies within the same
  0.2-torso radius of the projection, else *none*. How often it prefers the first, second,
  third or none; how often its preferred peak is the right one; and, where the first peak
  is wrong, how often it prefers a right other peak (what the fusion could fix) or a wrong
  one.

``--elevation-search`` lifts with the elevation grid and the head-top offset (the labels'
projection and the in-network fusion alike). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from head_top_offset import head_top_bias, project_labels  # noqa: E402

from poseviewer.cnn import load_cpm  # noqa: E402
from poseviewer.cnn.peaks import top_peaks  # noqa: E402
from poseviewer.lifting import load_pose_model  # noqa: E402
from poseviewer.paths import MODELS_DIR, shared_path  # noqa: E402
from poseviewer.skeleton import CPM14, h36m_to_cpm  # noqa: E402
from poseviewer.train2d.data import load_annotations, split_indices  # noqa: E402
from poseviewer.train2d.evaluate import LSHO, RHIP, eval_crops_from_photos, pck  # noqa: E402
from poseviewer.train2d.targets import normalise  # noqa: E402


def run_network(model, crops: np.ndarray, stage: int, k: int, window: int, floor: float,
                batch: int = 25) -> dict[str, np.ndarray]:
    """Per person and joint at ``stage``: the top-k peaks of the CNN maps (crop px), the
    fit's projection (crop px, NaN where not lifted), the CNN's and the fused joints."""
    cfg = model.config
    out: dict[str, list[np.ndarray]] = {"peaks": [], "proj": [], "cnn": [], "fused": [],
                                        "stages": []}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            x = normalise(crops[i:i + batch], cfg.norm_scale, cfg.norm_offset,
                          cfg.channel_order)
            res = model(x, read_joints=True)
            out["stages"].append(np.stack([t.joints.double().numpy() * cfg.stride
                                           for t in res.stages], axis=1))
            st = res.stages[stage]
            xy, _ = top_peaks(st.cnn[:, :cfg.num_joints], k, window, floor)
            out["peaks"].append(xy.numpy() * cfg.stride)
            proj = h36m_to_cpm(np.asarray(st.lift.joints_2d, dtype=np.float64)) * cfg.stride
            proj[~np.asarray(st.lifted.numpy(), dtype=bool)] = np.nan
            out["proj"].append(proj)
            out["cnn"].append(st.cnn_joints.double().numpy() * cfg.stride)
            out["fused"].append(st.joints.double().numpy() * cfg.stride)
            print(f"  {min(i + batch, len(crops))}/{len(crops)} crops", end="\r",
                  file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {key: np.concatenate(v) for key, v in out.items()}  # stages: (N, T, J, 2)


def classify(peaks: np.ndarray, proj: np.ndarray, gt: np.ndarray, radius: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """(N, J, k) which peaks are right (within ``radius`` (N,) of the label) and (N, J) the
    peak the fit prefers (0..k-1: the nearest to the projection within ``radius`` of it;
    k: none)."""
    r = radius[:, None, None]
    right = np.linalg.norm(peaks - gt[:, :, None], axis=-1) <= r
    d = np.linalg.norm(peaks - proj[:, :, None], axis=-1)
    d = np.where(np.isfinite(d), d, np.inf)
    near = d.argmin(-1)
    k = peaks.shape[2]
    prefers = np.where(np.take_along_axis(d, near[..., None], -1)[..., 0] <= radius[:, None],
                       near, k)
    return right, prefers


def main() -> int:
    """Measure and print the per-part table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(MODELS_DIR / "cpm_default.safetensors"))
    ap.add_argument("--pose-model", default=str(MODELS_DIR / "pose3d_default.safetensors"))
    ap.add_argument("--elevation-search", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="first N validation images")
    ap.add_argument("--stage", type=int, default=-1, help="stage (0-based; -1 the last)")
    ap.add_argument("--peaks", type=int, default=3)
    ap.add_argument("--window", type=int, default=2, help="peak: max in (2w+1)^2 map px")
    ap.add_argument("--floor", type=float, default=0.05, help="peak: >= floor x the max")
    ap.add_argument("--single-pass", action="store_true", help="no mirror test-time pass")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-mb", type=int, default=1500,
                    help="the 3D model's operator cache budget while it runs (MB)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    root = shared_path("data", "lspet")
    _, val = split_indices(len(load_annotations(root).names))
    val = val[: args.limit] if args.limit else val
    model = load_cpm(args.weights)
    if args.single_pass:
        model.set_flip_test(False)
    crops, gt, vis = eval_crops_from_photos(str(root), val, model.config.input_size)
    gt = gt.astype(np.float64)
    pm = load_pose_model(args.pose_model)
    pm.elevation_search = args.elevation_search
    pm.pattern_cache.max_patterns = 10_000
    pm.pattern_cache.max_bytes = args.cache_mb * 2**20
    fit = (f"elevation grid, head-top offset {pm.head_top_offset:.2f}"
           if args.elevation_search else "yaw-only (the release's; this script's default)")

    proj_labels = project_labels(pm, gt, vis)
    lab_ok, evaluated = pck(proj_labels, gt, vis)
    bias = head_top_bias(proj_labels, gt, vis)
    t1 = time.perf_counter()

    model.attach_pose_model(pm)
    w = model.fusion_weights()
    net = run_network(model, crops, args.stage, args.peaks, args.window, args.floor)
    stage = args.stage % model.config.num_stages + 1
    torso = np.linalg.norm(gt[:, LSHO] - gt[:, RHIP], axis=-1)
    right, prefers = classify(net["peaks"], net["proj"], gt, 0.2 * torso)
    k = args.peaks
    ev = evaluated
    cnn_ok = pck(net["cnn"], gt, vis)[0]
    fused_ok = pck(net["fused"], gt, vis)[0]

    def pct(mask: np.ndarray, among: np.ndarray) -> np.ndarray:
        n = among.sum(0)
        return np.where(n > 0, 100 * (mask & among).sum(0) / np.maximum(n, 1), np.nan)

    first_wrong = ev & ~right[..., 0]
    pref_peak = np.take_along_axis(
        np.concatenate([right, np.zeros_like(right[..., :1])], -1), prefers[..., None], -1
    )[..., 0]  # the preferred peak is right (never for 'none')
    cols = {
        "labels' projection PCK": pct(lab_ok, ev),
        "CNN (first peak) PCK": pct(cnn_ok, ev),
        "fused PCK": pct(fused_ok, ev),
        f"right peak in top {k}": pct(right.any(-1), ev),
    }
    for i, name in enumerate(["first", "second", "third"][:k] + ["none"]):
        cols[f"fit prefers {name}"] = pct(prefers == (i if name != "none" else k), ev)
    cols["preferred peak right"] = pct(pref_peak, ev & (prefers < k))
    cols["first wrong: prefers a right other"] = pct(pref_peak & (prefers > 0), first_wrong)
    cols["first wrong: prefers a wrong one"] = pct(~pref_peak & (prefers < k), first_wrong)
    names = list(cols)
    print(f"\nfusion diagnostic: {len(val)} validation images, {int(ev.any(1).sum())} people "
          f"with a torso; stage {stage} of {model.config.num_stages}; fit: {fit}; fusion "
          f"weights {np.round(w.detach().numpy()[:, 0], 3).tolist() if w is not None else None}"
          f"; mirror pass {'on' if model.config.flip_test else 'off'}; peaks: window "
          f"{2 * args.window + 1} map px, floor {args.floor:g}")
    print(f"head-top bias of the labels' projection: {bias:+.3f} torso lengths "
          "(positive = too low)\n")
    print("| part | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    rows = [(CPM14.joints[j], [cols[c][j] for c in names]) for j in range(len(CPM14.joints))]
    allcol = {
        "labels' projection PCK": (lab_ok, ev), "CNN (first peak) PCK": (cnn_ok, ev),
        "fused PCK": (fused_ok, ev), f"right peak in top {k}": (right.any(-1), ev),
        "preferred peak right": (pref_peak, ev & (prefers < k)),
        "first wrong: prefers a right other": (pref_peak & (prefers > 0), first_wrong),
        "first wrong: prefers a wrong one": (~pref_peak & (prefers < k), first_wrong),
    }
    for i, name in enumerate(["first", "second", "third"][:k] + ["none"]):
        allcol[f"fit prefers {name}"] = (prefers == (i if name != "none" else k), ev)
    rows.append(("**all**", [100 * (allcol[c][0] & allcol[c][1]).sum()
                             / max(allcol[c][1].sum(), 1) for c in names]))
    for name, vals in rows:
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    per_stage = pck(net["stages"].transpose(1, 0, 2, 3), gt, vis)[0].sum((1, 2)) / ev.sum()
    print("\nPCK@0.2 of the joints each stage reports (fusion on, all parts): "
          + " -> ".join(f"{100 * v:.2f}" for v in per_stage))
    print(f"\n(first peak wrong in {100 * first_wrong.sum() / ev.sum():.1f} % of the evaluated "
          f"joints; labels lifted in {t1 - t0:.0f} s, network + fusion "
          f"{time.perf_counter() - t1:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
