"""P-MPJPE of the lifting for people on and off the optical axis of a perspective camera,
with and without the re-projection into the virtual camera of each person's ray
(``poseviewer.camera``).

Protocol: Human3.6M S9+S11, every ``--stride``-th pose, a random yaw (seeded); the pose's
joint mean is put ``--distance`` mm from the camera on a ray ``a`` degrees off the optical
axis in a random image direction (seeded), the camera tilted down by ``e`` degrees; a
pinhole with the field of view ``--true-fov`` across the longer side of a
``--image`` W x H photo (principal point at its centre) projects the 14 CPM joints
(ground-truth 2D, all visible). Lifted:

- ``ortho``: the pixels as they are (``--fov 0``, the release's orthographic fit);
- ``ray, fov F, level``: re-projected with the assumed field of view F, the camera taken
  as level (the virtual camera's x axis perpendicular to the photo's vertical);
- ``ray, fov F, levelled per elevation`` (elevation search only; the default then): the
  virtual camera levelled for each camera elevation of the grid in turn, the lowest
  score kept;
- ``ray, true fov, true camera elevation``: the virtual camera truly level (what
  levelling per elevation could at best reach).

Each with the yaw-only fit and with the elevation search. P-MPJPE in mm over 17 joints.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python scripts/eval_camera_ray.py
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from poseviewer.camera import focal_length, lift_along_rays, world_up
from poseviewer.eval3d import EvalConfig, camera_frame, h36m_head_top, load_test_poses
from poseviewer.lifting import load_pose_model
from poseviewer.metrics import p_mpjpe
from poseviewer.skeleton import h36m_to_cpm


def render(cam: np.ndarray, off_deg: float, psi: np.ndarray, elev_deg: float,
           distance: float, f: float, size: tuple[int, int]) -> np.ndarray:
    """Camera-frame poses (N, 17, 3) (x right, y horizontal depth, z up, centred) -> photo
    pixels (N, 17, 2) of a camera tilted down by ``elev_deg`` that sees the pose's centre
    ``off_deg`` off its axis in the image direction ``psi`` (N,)."""
    e = np.radians(elev_deg)
    up = world_up(e)  # world axes in camera coordinates (x right, y down, z forward)
    fwd = np.array([0.0, -np.sin(e), np.cos(e)])  # the horizontal depth direction
    right = np.array([1.0, 0.0, 0.0])
    p = cam[..., :1] * right + cam[..., 1:2] * fwd + cam[..., 2:3] * up
    a = np.radians(off_deg)
    ray = np.stack([np.sin(a) * np.cos(psi), np.sin(a) * np.sin(psi),
                    np.full_like(psi, np.cos(a))], axis=-1)
    # turn the pose about the vertical so the ray sees it at the sampled yaw
    p = p + distance * ray[:, None, :]
    if (p[..., 2] <= 100.0).any():
        raise ValueError("a joint is behind the camera")
    pp = 0.5 * np.asarray(size, dtype=np.float64)
    return f * p[..., :2] / p[..., 2:] + pp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="3D model (default: the bundled one)")
    ap.add_argument("--stride", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--distance", type=float, default=3000.0, help="mm to the pose's centre")
    ap.add_argument("--image", default="1600x1200", help="photo size W x H")
    ap.add_argument("--true-fov", type=float, default=60.0,
                    help="the camera's field of view across the longer side, degrees")
    ap.add_argument("--fovs", default=None,
                    help="assumed fields of view (default: the true one and focal lengths "
                    "25%% longer and shorter)")
    ap.add_argument("--offaxis", default="0,15,25", help="degrees off the optical axis")
    ap.add_argument("--elevations", default="0,30,60", help="camera tilt down, degrees")
    ap.add_argument("--fits", default="yaw,grid", help="yaw (yaw-only), grid (elevation search)")
    ap.add_argument("--no-oracle", action="store_true",
                    help="skip the row with the true camera elevation")
    args = ap.parse_args(argv)

    size = tuple(int(v) for v in args.image.lower().split("x"))
    f_true = focal_length(args.true_fov, size)
    half = 0.5 * max(size)
    if args.fovs:
        fovs = [float(v) for v in args.fovs.split(",")]
    else:
        fovs = [args.true_fov] + [float(np.degrees(2 * np.arctan(half / (f_true * k))))
                                  for k in (1.25, 0.75)]
    offs = [float(v) for v in args.offaxis.split(",")]
    els = [float(v) for v in args.elevations.split(",")]
    model = load_pose_model(args.model)
    poses, _, _ = load_test_poses(None, EvalConfig(stride=args.stride))
    n = len(poses)
    rng = np.random.default_rng(args.seed)
    gt = camera_frame(poses, rng.uniform(0, 2 * np.pi, n))
    psi = rng.uniform(0, 2 * np.pi, n)
    vis = np.ones((n, 14), dtype=bool)
    print(f"{n} poses, {args.distance / 1000:g} m, photo {size[0]}x{size[1]}, true field of "
          f"view {args.true_fov:g} deg (f = {f_true:.0f} px); P-MPJPE mm", flush=True)
    t0 = time.perf_counter()
    for fit_name in args.fits.split(","):
        model.elevation_search = fit_name == "grid"
        rows: dict[str, list[float]] = {}
        for e in els:
            for a in offs:
                img = h36m_to_cpm(render(gt, a, psi, e, args.distance, f_true, size))
                res: dict[str, np.ndarray] = {}
                with h36m_head_top(model):
                    res["ortho (--fov 0)"] = lift_along_rays(model, img, vis, size, 0).pose_3d
                    for fv in fovs:
                        k = focal_length(fv, size) / f_true
                        tag = f"ray, fov {fv:.1f}" + (" (true)" if fv == args.true_fov
                                                      else f" (f x{k:.2f})")
                        res[tag + ", level"] = lift_along_rays(
                            model, img, vis, size, fv, elevation=0.0).pose_3d
                        if fit_name == "grid":
                            res[tag + ", levelled per elevation"] = lift_along_rays(
                                model, img, vis, size, fv).pose_3d
                    if not args.no_oracle:
                        res["ray, true fov, true camera elevation"] = lift_along_rays(
                            model, img, vis, size, args.true_fov,
                            elevation=np.radians(e)).pose_3d
                for k, v in res.items():
                    rows.setdefault(k, []).append(float(np.nanmean(p_mpjpe(v, gt))))
        fit_title = "yaw-only fit" if fit_name == "yaw" else "elevation search"
        print(f"\n{fit_title}:\n")
        cols = [f"e {e:g} / off {a:g}" for e in els for a in offs]
        print("| lifting | " + " | ".join(cols) + " |")
        print("|" + " --- |" * (len(cols) + 1))
        for k, v in rows.items():
            print(f"| {k} | " + " | ".join(f"{x:.1f}" for x in v) + " |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
