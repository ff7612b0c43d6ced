"""Measure 3D lifting accuracy of pose models side by side on held-out Human3.6M subjects.

Projects every test pose (subjects 9 and 11, every 5th row of the 10 Hz file by default)
to 2D at a random yaw, orthographically and with a perspective camera 4.5 m away, keeps
the 14 CNN joints, lifts with every model (also with 1, 2, 4 random joints hidden) and
prints P-MPJPE and scale-aligned MPJPE per action as Markdown tables, and the calibration
of the lifting's joint covariances (coverage of the 50/90/95% ellipsoids, raw and with
one factor per model fitted on S8).

Default models: the released prob_model_params.mat (from ../shared, if present) and our
bundled resources/models/pose3d_default.safetensors.

``--elevations`` measures instead the lifting from cameras above or below the person
(``eval3d.evaluate_elevations``). The tables lift with the 3D model's own fit, the
release's yaw-only one; ``--elevation-search`` measures them (and the calibration) with
the elevation grid that ``poseviewer estimate`` uses by default.

Example:
  poseviewer eval-3d --model released=../shared/reference/lftd/prob_model_params.mat \\
      --model ours=resources/models/pose3d_default.safetensors --plot eval.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``poseviewer eval-3d``."""
    parser.add_argument(
        "--model", action="append", metavar="NAME=PATH",
        help="a model to evaluate (.mat = released format, else our safetensors); repeat",
    )
    parser.add_argument("--data", help="Human3.6M 3D poses .npz (default: ../shared copy)")
    parser.add_argument("--subjects", default="9,11", help="test subjects (default 9,11)")
    parser.add_argument("--stride", type=int, default=5, help="use every N-th row (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for yaws and hidden joints")
    parser.add_argument("--hidden", default="0,1,2,4", help="numbers of hidden joints")
    parser.add_argument(
        "--projections", default="orthographic,perspective", help="orthographic,perspective"
    )
    parser.add_argument("--distance", type=float, default=4500.0, help="camera distance, mm")
    parser.add_argument("--plot", help="save a PNG plot here")
    parser.add_argument(
        "--calibration-subjects", default="8",
        help="subjects on which one covariance factor per model is fitted (default 8; "
             "'' to skip)")
    parser.add_argument("--calibration-plot",
                        help="save a PNG of coverage against nominal level here")
    parser.add_argument(
        "--elevation-search", action="store_true",
        help="the tables and the calibration with the fit that searches the camera's "
             "elevation (the one poseviewer estimate and lift use by default); without it, "
             "the release's yaw-only fit, as the published figures (--elevations always "
             "searches)")
    parser.add_argument("--markdown", help="also write the tables to this Markdown file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--elevations", nargs="?", const="-20,0,15,30,45,60,75", metavar="DEGREES",
        help="instead of the tables above: P-MPJPE by camera elevation (the camera tilted "
             "down by e, orthographic, ground-truth 2D; all joints, 4 hidden, 2D noise of "
             "5%% of the torso) and the fitted elevation's mean absolute error, per model "
             "(default elevations -20,0,15,30,45,60,75; stride 20 suits it)")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def default_models() -> dict[str, Path]:
    """released (if ../shared has it) and ours (bundled)."""
    from poseviewer.paths import MODELS_DIR, shared_path

    out = {}
    rel = shared_path("reference", "lftd", "prob_model_params.mat")
    if rel.exists():
        out["released"] = rel
    out["ours"] = MODELS_DIR / "pose3d_default.safetensors"
    return out


def run(args: argparse.Namespace) -> int:
    """Evaluate, print tables, optionally save plot and Markdown. Returns an exit code."""
    from poseviewer import eval3d
    from poseviewer.atomic import atomic_write_text
    from poseviewer.cnn.weights import WeightsError
    from poseviewer.lifting import load_pose_model

    try:
        if args.model:
            specs = {}
            for item in args.model:
                if "=" not in item:
                    raise ValueError(f"--model wants NAME=PATH; got {item!r}")
                name, path = item.split("=", 1)
                specs[name] = Path(path)
        else:
            specs = default_models()
        models = {name: load_pose_model(p) for name, p in specs.items()}
        if args.elevations or args.elevation_search:  # the fit that searches the elevation
            for m in models.values():
                m.elevation_search = True
        config = eval3d.EvalConfig(
            subjects=_ints(args.subjects), stride=args.stride, seed=args.seed,
            hidden=_ints(args.hidden),
            projections=tuple(p for p in args.projections.split(",") if p),
            distance=args.distance,
        )
        poses, actions, subjects = eval3d.load_test_poses(args.data, config)
        if args.elevations:
            els = tuple(float(t) for t in args.elevations.split(",") if t.strip())
            texts = [eval3d.elevation_table(eval3d.evaluate_elevations(
                m, poses, els, seed=args.seed, progress=not args.quiet), name)
                for name, m in models.items()]
            text = "\n\n".join(texts)
            print(text)
            if args.markdown:
                atomic_write_text(args.markdown, text + "\n")
            return 0
        calibration = None
        cal_subjects = _ints(args.calibration_subjects)
        if cal_subjects:
            if set(cal_subjects) & set(config.subjects):
                raise ValueError("--calibration-subjects must not overlap --subjects")
            cal_cfg = eval3d.EvalConfig(subjects=cal_subjects, stride=args.stride)
            try:
                calibration = (eval3d.load_test_poses(args.data, cal_cfg)[0], cal_subjects)
            except ValueError as exc:  # e.g. a data file without those subjects
                print(f"eval-3d: note: no covariance calibration ({exc})", file=sys.stderr)
        result = eval3d.evaluate(models, poses, actions, subjects, config,
                                 progress=not args.quiet, calibration=calibration)
    except (FileNotFoundError, ValueError, WeightsError) as exc:
        print(f"eval-3d: error: {exc}", file=sys.stderr)
        return 2
    text = eval3d.report_markdown(result, specs)
    print(text)
    try:
        if args.markdown:
            atomic_write_text(args.markdown, text + "\n")
        if args.plot:
            eval3d.plot(result, args.plot)
            print(f"saved plot {args.plot}")
        if args.calibration_plot:
            eval3d.plot_calibration(result, args.calibration_plot)
            print(f"saved plot {args.calibration_plot}")
    except OSError as exc:  # the atomic writer's message names the path and the reason
        print(f"eval-3d: error: {exc}", file=sys.stderr)
        return 2
    return 0
