"""Learn a mixture-of-PPCA 3D pose model (the lifting's prior) from 3D motion capture.

Input: an .npz with ``poses`` (N, 17, 3) in mm, H36M-17 joint order, z up (and optionally
``subject`` (N,) to select subjects), or an .npy holding the (N, 17, 3) array.
Default: Human3.6M training subjects 1, 5, 6, 7, 8 from ../shared/data/h36m.
Output: a model file (safetensors + metadata) that ``poseviewer lift --model`` and the
viewer load.

Example:
  poseviewer train-3d -o my_model.safetensors --components 3 --basis 25 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``poseviewer train-3d``."""
    parser.add_argument("--data", help="poses .npz/.npy (default: ../shared Human3.6M file)")
    parser.add_argument(
        "--subjects",
        default="1,5,6,7,8",
        help="comma-separated subjects to train on, when the file has 'subject' (default "
        "1,5,6,7,8; 'all' for every pose)",
    )
    parser.add_argument("-o", "--output", required=True, help="model file to write")
    parser.add_argument("--components", type=int, default=3, help="mixture components K")
    parser.add_argument("--basis", type=int, default=25, help="basis vectors per component")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    parser.add_argument(
        "--no-mirror", action="store_true", help="do not add left-right mirrored poses"
    )
    parser.add_argument("--max-iter", type=int, default=300, help="maximum EM iterations")
    parser.add_argument(
        "--tol", type=float, default=1e-6, help="stop when log-likelihood/pose gains less"
    )
    parser.add_argument(
        "--prior-factor", type=float, default=None,
        help="multiply the basis weights 1/sqrt(variance) (default: the calibrated value)",
    )
    parser.add_argument(
        "--data-factor", type=float, default=None,
        help="multiply the data weight 1/sqrt(noise variance) (default: calibrated value)",
    )
    parser.add_argument(
        "--per-component-noise", action="store_true",
        help="each component's own noise for the data weight (default: pooled)",
    )
    parser.add_argument(
        "--raw-sigma", action="store_true",
        help="no calibration: sigma = 1/sqrt(variance) exactly, per-component noise",
    )
    parser.add_argument(
        "--normalise-size", action="store_true",
        help="scale every pose to the mean total bone size before fitting",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _load(path: str, subjects: str) -> tuple[np.ndarray, list[int] | str, str]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"pose file not found: {p}")
    if p.suffix == ".npy":
        _note_all_subjects(p, subjects, "a .npy file")
        return np.load(p, allow_pickle=False), "all", str(p)
    with np.load(p, allow_pickle=False) as d:
        if "poses" not in d:
            raise ValueError(f"{p}: no 'poses' array (keys: {sorted(d.keys())})")
        poses = d["poses"]
        if subjects != "all" and "subject" in d:
            subj = [int(s) for s in subjects.split(",") if s.strip()]
            sel = np.isin(d["subject"], subj)
            if not sel.any():
                raise ValueError(f"{p}: no poses for subjects {subj}")
            return poses[sel], subj, str(p)
        _note_all_subjects(p, subjects, "no 'subject' array")
    return poses, "all", str(p)


def _note_all_subjects(path: Path, subjects: str, why: str) -> None:
    """Say so when --subjects can't be applied (the file has no subject ids)."""
    if subjects != "all":
        print(f"train-3d: note: {path.name} has {why}; --subjects {subjects} ignored, "
              "training on every pose", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Train and save; prints a summary. Returns a process exit code."""
    from poseviewer.paths import shared_path
    from poseviewer.train3d import (
        DATA_FACTOR,
        PRIOR_FACTOR,
        TrainingError,
        to_pose_model,
        train_pose_model,
    )

    pf = args.prior_factor if args.prior_factor is not None else PRIOR_FACTOR
    df = args.data_factor if args.data_factor is not None else DATA_FACTOR
    pooled = not args.per_component_noise
    if args.raw_sigma:
        pf, df, pooled = 1.0, 1.0, False

    data = args.data or str(shared_path("data", "h36m", "h36m_3d_17j_10hz.npz"))
    try:
        poses, subjects, src = _load(data, args.subjects)
        report = train_pose_model(
            poses,
            n_components=args.components,
            n_basis=args.basis,
            seed=args.seed,
            mirror_augment=not args.no_mirror,
            max_iter=args.max_iter,
            tol=args.tol,
            progress=not args.quiet,
            meta={"data": Path(src).name, "subjects": subjects},
            normalise_size=args.normalise_size,
            prior_factor=pf,
            data_factor=df,
            pooled_noise=pooled,
        )
        model = to_pose_model(report)
    except (TrainingError, FileNotFoundError, ValueError) as exc:
        print(f"train-3d: error: {exc}", file=sys.stderr)
        return 2
    try:
        model.save(args.output)  # atomic (temp file + os.replace)
    except OSError as exc:
        print(f"train-3d: error: cannot write the model: {exc}", file=sys.stderr)
        return 2
    fit = report.fit
    print(f"trained on {len(poses)} poses ({report.meta['n_training_vectors']} with mirrors) "
          f"from {Path(src).name}, subjects {subjects}")
    print(f"EM: {fit.n_iter} iterations, converged={fit.converged}, "
          f"log-likelihood/pose {fit.log_likelihood[0]:.3f} -> {fit.log_likelihood[-1]:.3f}, "
          f"{report.seconds:.1f} s")
    sig = report.params["sigma_raw"]
    for k in range(len(sig)):
        print(f"  component {k}: weight {report.meta['mixing_weights'][k]:.3f}, "
              f"basis std {1 / sig[k, 0]:.0f}..{1 / sig[k, -2]:.0f} mm, "
              f"noise std {1 / sig[k, -1]:.1f} mm")
    print(f"sigma calibration: prior x{pf}, data x{df}, pooled noise {pooled}")
    print(f"wrote {args.output}")
    return 0
