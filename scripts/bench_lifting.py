#!/usr/bin/env python
"""Benchmark ``PoseModel3D.lift`` against a straightforward numpy loop (one lstsq per person,
component and angle, as the release does) and print times, people/s and ratios.

    .venv/bin/python scripts/bench_lifting.py [--model PATH] [--sizes 1 32 256 4096]
                                              [--loop-people 32] [--lift-threads model|none|T]

Per batch size N, in one run:
- warm: ``lift`` with the visibility patterns' operators already cached (the steady state
  of the viewer and of batch runs);
- cold: the pattern cache cleared before every call (a first call: patterns with fewer
  than ``model.build_min`` people are solved directly, larger ones are prepared);
- direct: ``lift_method = "direct"``, every pattern solved directly (``direct.fit_pairs``,
  no operators; what "cold no slower than today" compares with);
- loop: the numpy loop, run on up to ``--loop-people`` people; its time per person does not
  depend on N, so larger sizes are extrapolated linearly (marked).
Goals (issue 13): N = 32 warm >= 1000x the loop; one person warm <= 0.1 ms; cold no slower
than direct. The first table is the default fit (yaw-only, the release's). The yaw x
elevation grid (issue 20; ``elevation_search = True``, 7 elevations; ``direct``:
``elevation.fit_direct``) has the goals one person warm <= 0.25 ms, N = 32 with 5
visibility patterns >= 1000x the loop, the operator cache under its budget
(``cache.CACHE_BUDGET``); the last block prints these beside the yaw-only fit
(``elevations = (0,)``) measured in the same run. The 2D inputs are the 21 reference cases of
``../shared/reference/lftd/lift_vectors_dev.npz`` (5 visibility patterns) tiled, with a
little noise, to the batch size. The loop's and the direct solver's results are compared
with ``lift`` (max |difference| of the 3D poses, mm; the loop is the release's own procedure,
its capped refit's depth shift included, so it is compared with ``release_exact=True``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poseviewer.lifting import PoseModel3D  # noqa: E402
from poseviewer.paths import shared_dir  # noqa: E402
from poseviewer.skeleton import CPM_TO_H36M_SLOTS, CPM_TO_H36M_SOURCES, H36M17  # noqa: E402

_CAM = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
_BONES = np.array(H36M17.bones)


def _u(t: float) -> np.ndarray:
    s, c = math.sin(t), math.cos(t)
    return np.array([[s, -c, 0], [c, s, 0], [0, 0, 1.0]])


def _fit_loop(w, v, mu, e, sig, cap=None):
    """Best angle of one component: 100 x np.linalg.lstsq on the spec's 80 x 29 system."""
    big_e = np.zeros((29, 3, 17))
    big_e[0] = mu
    big_e[1, 0] = big_e[3, 0] = 1.0
    big_e[2, 1] = 1.0
    big_e[4:] = e
    reg = np.r_[0.0, 1e-5, 1e-5, 1e-5, 5.2 * sig[:25]]
    t = np.zeros(29)
    t[0] = -0.003
    lam = sig[25]
    vv = np.r_[v, v]
    best = None
    for j in range(100):
        th = 2 * math.pi * j / 100
        p = (_CAM @ _u(th).T)[:2]
        pe = np.einsum("ab,ibj->aji", p, big_e).reshape(34, 29)
        rhs = w.reshape(-1)
        if cap is None:
            a_mat = np.vstack([lam * vv[:, None] * pe, np.diag(reg), np.zeros((17, 29))])
            b = np.r_[lam * vv * rhs, t, np.zeros(17)]
        else:
            rhs = rhs - (p @ (cap * mu)).reshape(-1)
            a_mat = np.vstack([lam * vv[:, None] * pe[:, 1:], np.diag(reg[1:]),
                               np.zeros((17, 28))])
            b = np.r_[lam * vv * rhs, t[:28], np.zeros(17)]
        a, *_ = np.linalg.lstsq(a_mat, b, rcond=None)
        r = float(np.sum((a_mat @ a - b) ** 2))
        if best is None or r < best[0]:
            best = (r, a, th)
    return best


def lift_loop(xy: np.ndarray, vis: np.ndarray, mu, e, sigma) -> np.ndarray:
    """The whole lifting, one person at a time, numpy: (N, 17, 3)."""
    out = np.full((len(xy), 17, 3), np.nan)
    k_all = mu.shape[0]
    lgdet = np.sum(-np.log(sigma[:, :25]), 1) + (-np.log(sigma[:, 25])) * (51 - 28)
    for n in range(len(xy)):
        w = np.zeros((2, 17))
        w[:, CPM_TO_H36M_SLOTS] = xy[n, CPM_TO_H36M_SOURCES].T
        v = np.zeros(17)
        v[CPM_TO_H36M_SLOTS] = vis[n, CPM_TO_H36M_SOURCES]
        vb = v > 0
        if vb.sum() < 5:
            continue
        w[:, vb] -= w[:, vb].mean(1, keepdims=True)
        m = (w[1, vb].min() - w[1, vb].max()) / 2 or 1.0
        w[:, vb] /= m
        fits = []
        for k in range(k_all):
            r, a, th = _fit_loop(w, v, mu[k], e[k], sigma[k])
            if a[0] > -0.001:
                r, a2, th = _fit_loop(w, v, mu[k], e[k], sigma[k], cap=-0.001)
                a = np.r_[-0.001, a2]
            fits.append((r / 2 + lgdet[k] * a[0] ** 2, a, th))
        k = int(np.argmin([f[0] for f in fits]))
        _, a, th = fits[k]
        big_e = np.zeros((28, 3, 17))
        big_e[0, 0] = big_e[2, 0] = 1.0
        big_e[1, 1] = 1.0
        big_e[3:] = e[k]
        x = _u(th).T @ (mu[k] + np.einsum("i,iab->ab", a[1:] / a[0], big_e)) * -abs(a[0])
        y = _CAM @ x
        y[:2, vb] = (y[:2, vb] + 1.55 * w[:, vb]) / 2.55
        x = -(_CAM.T @ y)
        size = np.sqrt(np.sum((x[:, _BONES[:, 1]] - x[:, _BONES[:, 0]]) ** 2))
        out[n] = (x / size * 0.97 * 1174.88312988).T
    return out


def _time(fn, repeat: int) -> float:
    fn()  # warm-up (and, for the warm timings, prepares the patterns)
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="model (.mat or .safetensors); default: the release's .mat in ../shared")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 32, 256, 4096])
    ap.add_argument("--loop-people", type=int, default=32)
    ap.add_argument("--lift-threads", default="model",
                    help="PoseModel3D.lift_threads (BLAS threads of the large products): an "
                         "int, 'none' (numpy's setting) or 'model' (the model's default, 1)")
    args = ap.parse_args()
    lftd = shared_dir() / "reference" / "lftd"
    path = args.model or lftd / "prob_model_params.mat"
    model = (PoseModel3D.from_mat(path) if Path(path).suffix == ".mat"
             else PoseModel3D.load(path))
    if args.lift_threads != "model":
        model.lift_threads = None if args.lift_threads == "none" else int(args.lift_threads)
    with np.load(lftd / "lift_vectors_dev.npz") as d:
        base_xy = d["in_pose_2d_yx"][:, :, ::-1].copy()
        base_vis = d["in_visibility"]
    mu, e, sigma = model.mu, model.e, model.sigma
    rng = np.random.default_rng(0)
    direct = (PoseModel3D.from_mat(path) if Path(path).suffix == ".mat"
              else PoseModel3D.load(path))
    direct.lift_method = "direct"
    direct.lift_threads = model.lift_threads
    print(f"numpy {np.__version__}, lift_threads {model.lift_threads}, "
          f"build_min {model.build_min}, "
          f"cpus {os.cpu_count()}, load average {os.getloadavg()}")
    print(f"{'N':>5} {'warm ms':>9} {'warm/person':>12} {'cold ms':>9} "
          f"{'direct ms':>10} "
          f"{'loop ms':>10} {'warm vs loop':>13} {'cold/direct':>12} {'|diff| loop':>12} "
          f"{'|diff| direct':>13}")
    one: float | None = None
    for n in args.sizes:
        idx = np.arange(n) % len(base_xy)
        xy = base_xy[idx] + rng.normal(scale=1.0, size=(n, 14, 2)) * (np.arange(n) >= 21)[
            :, None, None]
        vis = base_vis[idx]
        repeat = max(3, min(200, 4000 // max(n, 1)))
        t_warm = _time(lambda xy=xy, vis=vis: model.lift(xy, vis), repeat)
        if n == 1:
            one = t_warm

        def cold(xy=xy, vis=vis) -> None:
            model.pattern_cache.clear()
            model.lift(xy, vis)

        t_cold = _time(cold, max(3, repeat // 10))
        t_direct = _time(lambda xy=xy, vis=vis: direct.lift(xy, vis), max(3, repeat // 10))
        n_loop = min(n, args.loop_people)
        t0 = time.perf_counter()
        loop_pose = lift_loop(xy[:n_loop], vis[:n_loop], mu, e, sigma)
        t_loop = (time.perf_counter() - t0) * n / n_loop
        mine = model.lift(xy, vis).pose_3d
        # the loop is the release's (its capped refit's depth shift included)
        exact = model.lift(xy[:n_loop], vis[:n_loop], release_exact=True).pose_3d
        diff = np.nanmax(np.abs(exact - loop_pose))
        diff_d = np.nanmax(np.abs(mine - direct.lift(xy, vis).pose_3d))
        note = "" if n_loop == n else f"  (loop timed on {n_loop}, scaled)"
        print(f"{n:5d} {t_warm * 1e3:9.3f} {t_warm / n * 1e3:10.4f}ms "
              f"{t_cold * 1e3:9.2f} "
              f"{t_direct * 1e3:10.2f} {t_loop * 1e3:10.0f} {t_loop / t_warm:12.0f}x "
              f"{t_cold / t_direct:12.2f} {diff:12.2e} {diff_d:13.2e}{note}")
    if one is not None:
        print(f"one person warm: {one * 1e3:.3f} ms; goal <= 0.1 ms")
    _grid_block(model, path, base_xy, base_vis, mu, e, sigma)
    print(f"load average after: {os.getloadavg()}")
    return 0


def _grid_block(model: PoseModel3D, path, base_xy: np.ndarray, base_vis: np.ndarray,
                mu, e, sigma) -> None:
    """The elevation grid against the yaw-only fit, in one run: one person warm (numpy
    result), N = 32 with the reference cases' 5 visibility patterns, the operator cache."""
    from poseviewer.lifting import cache

    def load() -> PoseModel3D:
        m = PoseModel3D.from_mat(path) if Path(path).suffix == ".mat" else PoseModel3D.load(path)
        m.lift_threads = model.lift_threads
        return m

    grid, level = load(), load()
    grid.elevation_search = True  # (the model's default is the yaw-only fit)
    level.elevations = (0.0,)
    n = 32
    idx = np.arange(n) % len(base_xy)
    xy, vis = base_xy[idx], base_vis[idx]
    assert len({tuple(r) for r in vis}) == 5
    rows = []
    for name, m in (("grid", grid), ("yaw-only", level)):
        t1 = _time(lambda m=m: m.lift(xy[:1], vis[:1]), 300)
        t32 = _time(lambda m=m: m.lift(xy, vis), 100)
        m.pattern_cache.clear()
        t_cold = _time(lambda m=m: (m.pattern_cache.clear(), m.lift(xy, vis)), 3)
        m.lift(xy, vis)
        rows.append((name, t1, t32, t_cold, m.pattern_cache.nbytes, len(m.pattern_cache)))
    t0 = time.perf_counter()
    lift_loop(xy[:8], vis[:8], mu, e, sigma)
    t_loop = (time.perf_counter() - t0) * n / 8
    print(f"\nelevation grid {grid.elevations} deg, spike {grid.elevation_spike}; "
          f"release-style loop {t_loop * 1e3:.0f} ms for N = {n} (timed on 8, scaled)")
    print(f"{'fit':>9} {'1 warm ms':>10} {'N=32 5 patterns ms':>19} {'vs loop':>9} "
          f"{'cold N=32 ms':>13} {'cache MB':>9} {'patterns':>9}")
    for name, t1, t32, tc, nb, npat in rows:
        print(f"{name:>9} {t1 * 1e3:10.3f} {t32 * 1e3:19.3f} {t_loop / t32:8.0f}x "
              f"{tc * 1e3:13.1f} {nb / 2**20:9.1f} {npat:9d}")
    g, y = rows
    print(f"grid / yaw-only: one person {g[1] / y[1]:.2f}x, N = 32 {g[2] / y[2]:.2f}x; "
          f"cache {g[4] / 2**20 / g[5]:.1f} MB a pattern, budget "
          f"{cache.CACHE_BUDGET / 2**20:.0f} MB (goals: one person <= 0.25 ms, "
          f">= 1000x the loop)")
    _prep_block(grid, xy, vis, load)


def _prep_block(grid: PoseModel3D, xy: np.ndarray, vis: np.ndarray, load) -> None:
    """Preparing one visibility pattern, per pattern of ``vis``: the yaw-only operators
    (``cache.build``) against the grid's (``cache.pairs_only`` + ``elevation.build``), in
    turn, the median of 7 rounds each, and the grid's operators' memory; then one person of
    each pattern solved directly (``lift_method = "direct"``, the whole lift: the route of
    a pattern met by fewer than ``build_min`` people), grid against yaw-only."""
    from poseviewer.lifting import cache, elevation

    obs = grid.observed_arrays()
    elev, level = grid.elevation_grid(False)
    pats = sorted({tuple(r) for r in vis}, key=lambda r: -sum(r))
    first = [int(np.flatnonzero((vis == np.array(p)).all(1))[0]) for p in pats]
    gd, yd = load(), load()
    gd.elevation_search = True
    yd.elevations = (0.0,)
    gd.lift_method = yd.lift_method = "direct"
    ty: list[list[float]] = [[] for _ in pats]
    tg: list[list[float]] = [[] for _ in pats]
    dy: list[list[float]] = [[] for _ in pats]
    dg: list[list[float]] = [[] for _ in pats]
    for _ in range(7):
        for i, p in enumerate(pats):
            mask = np.array(p, dtype=bool)
            t0 = time.perf_counter()
            cache.build(grid.arrays, mask)
            ty[i].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            eops = elevation.build(obs, cache.pairs_only(obs, mask), elev, level,
                                   grid.elevation_spike)
            tg[i].append(time.perf_counter() - t0)
            j = first[i]
            t0 = time.perf_counter()
            yd.lift(xy[j : j + 1], vis[j : j + 1])
            dy[i].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            gd.lift(xy[j : j + 1], vis[j : j + 1])
            dg[i].append(time.perf_counter() - t0)
    mb = [eops.nbytes / 2**20]
    yv = np.array([statistics.median(t) for t in ty])
    gv = np.array([statistics.median(t) for t in tg])
    print(f"preparing a pattern (median of 7, {len(pats)} patterns, visible joints "
          f"{[int(sum(p)) for p in pats]}): yaw-only {np.round(yv * 1e3, 1).tolist()} ms, grid "
          f"{np.round(gv * 1e3, 1).tolist()} ms; grid / yaw-only "
          f"{np.round(gv / yv, 2).tolist()} (mean {float(np.mean(gv / yv)):.2f}x; goal <= 3x); "
          f"the grid's operators {mb[0]:.1f} MB a pattern before its first fit")
    dyv = np.array([statistics.median(t) for t in dy])
    dgv = np.array([statistics.median(t) for t in dg])
    print(f"one person solved directly (median of 7, per pattern): yaw-only "
          f"{np.round(dyv * 1e3, 2).tolist()} ms, grid {np.round(dgv * 1e3, 1).tolist()} ms; "
          f"grid direct / grid preparing {np.round(dgv / gv, 2).tolist()} "
          f"(mean {float(np.mean(dgv / gv)):.2f}x)")

if __name__ == "__main__":
    raise SystemExit(main())
