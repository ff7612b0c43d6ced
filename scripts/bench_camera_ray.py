"""What lifting along each person's camera ray (``poseviewer.camera``) costs against the
plain lifting, warm (visibility patterns prepared), yaw-only and with the elevation search
(where the virtual camera is levelled for each of the grid's elevations in turn).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_camera_ray.py [--sizes 1 32] [--repeat 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from poseviewer.camera import DEFAULT_FOV_DEG, lift_along_rays
from poseviewer.lifting import load_pose_model


def best_of_interleaved(fns, repeat: int) -> list[float]:
    """The fastest of ``repeat`` calls of each function, seconds of this process's CPU
    time (not wall time: on a machine shared with other work a call of a few ms is
    preempted, and its wall time then says more about the other work); the functions
    take turns."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.process_time()
            fn()
            best[i] = min(best[i], time.process_time() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    model = load_pose_model(None)
    rng = np.random.default_rng(0)
    size = (1600, 1200)
    base = np.asarray(model.mu, dtype=np.float64)[0].T[:, [0, 2]] * [0.3, -0.3]
    from poseviewer.skeleton import h36m_to_cpm

    print(f"fov {DEFAULT_FOV_DEG:g} deg, photo {size[0]}x{size[1]}, all joints visible; "
          "best of", args.repeat, "(interleaved)")
    print("| fit | people | plain lift (ms) | along the rays (ms) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for search in (False, True):
        model.elevation_search = search
        for n in args.sizes:
            joints = h36m_to_cpm(base[None] + rng.uniform(200, 1400, (n, 1, 2))
                                 + rng.normal(0, 3, (n, 17, 2)))
            vis = np.ones((n, 14), dtype=bool)
            plain, ray = best_of_interleaved(
                [lambda j=joints, v=vis: model.lift(j, v, as_numpy=True),
                 lambda j=joints, v=vis: lift_along_rays(model, j, v, size, DEFAULT_FOV_DEG)],
                args.repeat)
            name = "elevation search" if search else "yaw only"
            print(f"| {name} | {n} | {plain * 1e3:.2f} | {ray * 1e3:.2f} | "
                  f"{ray / plain:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
