#!/usr/bin/env python
"""Run the lifting on fixed inputs and save every output, or compare two such runs.

    python scripts/compare_lifting.py save /tmp/lift_before.npz [--no-estimate]
    python scripts/compare_lifting.py compare /tmp/lift_before.npz /tmp/lift_after.npz

``save`` lifts, with the bundled 3D model and the release's model in ../shared:
- the 21 reference cases of ``lift_vectors_dev.npz`` (5 visibility patterns, a capped
  component) with ``release_exact`` True and False, with intermediates;
- 48 random poses of the model projected from random yaws and elevations, with 2D noise and
  random hidden joints (many visibility patterns, some people with fewer than 5 visible
  joints, one on a single image row), as one batch of mixed patterns;
- each of these by every route: patterns solved directly (``build_min`` large), every
  pattern prepared (``build_min`` 0), ``lift_method = "direct"``, the elevation search
  (``elevation_search = True``), one person at a time;
- ``project`` of each fit;
- (unless ``--no-estimate``) the whole estimate of the bundled photos (every stage's fit
  with the network's per-stage lifting and fusion, and every field of the result).

Every array of every result is saved under a key naming the case. ``compare`` prints, per
group of keys, how many arrays are bit-identical and the largest absolute and relative
difference (NaN where both are NaN counts as equal), then the overall maxima (``--detail
PREFIX`` lists the differing arrays under a key prefix; '|' separates key parts). File
paths (strings holding '/') are not compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poseviewer.paths import DEFAULT_POSE_MODEL, shared_dir  # noqa: E402


def _arr(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _fields(prefix: str, obj: Any, out: dict[str, np.ndarray]) -> None:
    """Every array under ``obj`` (dataclasses, dicts, lists, arrays) into ``out``."""
    if obj is None:
        return
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _fields(f"{prefix}.{f.name}", getattr(obj, f.name), out)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _fields(f"{prefix}.{k}", v, out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _fields(f"{prefix}[{i}]", v, out)
    elif isinstance(obj, (str, bytes)):
        out[prefix] = np.asarray(str(obj))
    elif isinstance(obj, (int, float, bool, np.generic)) or hasattr(obj, "shape"):
        a = _arr(obj)
        if a.dtype != object:
            out[prefix] = a


def _random_people(model: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 14, 2) CPM-14 pixels and (n, 14) visibility of random model poses seen from
    random yaws and elevations, with noise and hidden joints."""
    from poseviewer.skeleton import CPM_TO_H36M_SLOTS, CPM_TO_H36M_SOURCES

    rng = np.random.default_rng(seed)
    mu, e, sig = (_arr(x) for x in (model.mu, model.e, model.sigma))
    K, B = e.shape[:2]
    xy = np.zeros((n, 14, 2))
    vis = np.ones((n, 14), dtype=bool)
    for i in range(n):
        k = int(rng.integers(K))
        c = rng.standard_normal(B) / (5.2 * sig[k, :B]) * 0.7
        pose = mu[k] + np.einsum("i,iab->ab", c, e[k])  # (3, 17)
        yaw, el = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(-20, 70))
        s, co = math.sin(yaw), math.cos(yaw)
        rz = np.array([[co, -s, 0], [s, co, 0], [0, 0, 1.0]])
        se, ce = math.sin(el), math.cos(el)
        p = rz @ pose
        img = np.stack([p[0], -(se * p[1] + ce * p[2])], -1)  # (17, 2)
        img = img * rng.uniform(0.1, 0.4) + rng.uniform(100, 600, 2)
        img += rng.normal(scale=rng.uniform(0.0, 6.0), size=img.shape)
        xy[i, CPM_TO_H36M_SOURCES] = img[CPM_TO_H36M_SLOTS]
        hide = rng.integers(0, 6) if i % 3 else 0
        vis[i, rng.choice(14, size=hide, replace=False)] = False
    vis[5, :] = False  # nothing visible
    vis[6, 4:] = False  # 4 visible: not lifted
    xy[7, :, 1] = 300.0  # every joint on one row: not lifted
    xy[8, 3] = np.nan  # a hidden NaN joint
    vis[8, 3] = False
    vis[20:26] = vis[19]  # a pattern shared by 7 people
    return xy, vis


def _model(path: Path) -> Any:
    from poseviewer.lifting import PoseModel3D

    return PoseModel3D.from_mat(path) if path.suffix == ".mat" else PoseModel3D.load(path)


def _lift_all(name: str, path: Path, xy: np.ndarray, vis: np.ndarray,
              out: dict[str, np.ndarray], one_by_one: bool) -> None:
    """Every route and mode on one input batch."""
    routes: list[tuple[str, dict[str, Any]]] = [
        ("direct_solve", {"build_min": 10**9}),
        ("prepared", {"build_min": 0}),
        ("method_direct", {"lift_method": "direct"}),
        ("elevation", {"elevation_search": True}),
        ("elevation_nohead", {"elevation_search": True, "head_top_offset": 0.0}),
    ]
    for rname, attrs in routes:
        m = _model(path)
        for a, v in attrs.items():
            setattr(m, a, v)
        for exact in (True, False):
            key = f"{name}/{rname}/exact{int(exact)}"
            fit, extra = m.lift(xy, vis, return_intermediates=True, release_exact=exact)
            _fields(key + "/fit", fit, out)
            _fields(key + "/extra", extra, out)
            out[key + "/project"] = _arr(m.project(fit))
            again = m.lift(xy, vis, release_exact=exact, as_numpy=True)  # warm / numpy
            _fields(key + "/again", again, out)
            if one_by_one:
                for i in range(len(xy)):
                    _fields(f"{key}/one{i}", m.lift(xy[i : i + 1], vis[i : i + 1],
                                                    release_exact=exact, as_numpy=True), out)


def _estimates(out: dict[str, np.ndarray]) -> None:
    """The whole estimate of the bundled photos (fusion on, every stage's fit)."""
    import torch

    from poseviewer.estimator import Estimator
    from poseviewer.paths import RESOURCES

    torch.manual_seed(0)
    est = Estimator.default()
    photos = [RESOURCES / "sample.jpg", RESOURCES / "sample_fullbody.jpg",
              shared_dir() / "reference" / "lftd" / "test_image.png"]
    for search in (False, True):
        est.elevation_search = search
        for p in photos:
            res = est.estimate(str(p))
            d: dict[str, np.ndarray] = {}
            _fields("r", res, d)
            for k, v in d.items():
                if "timing" in k or "seconds" in k or k.endswith(".source") \
                        or k.endswith(".path"):
                    continue  # wall times and paths
                out[f"estimate/{p.stem}/search{int(search)}/{k}"] = v


def save(path: Path, estimate: bool) -> None:
    lftd = shared_dir() / "reference" / "lftd"
    out: dict[str, np.ndarray] = {}
    with np.load(lftd / "lift_vectors_dev.npz") as d:
        ref_xy = np.ascontiguousarray(d["in_pose_2d_yx"][:, :, ::-1])
        ref_vis = d["in_visibility"]
    for mname, mpath in (("release", lftd / "prob_model_params.mat"),
                         ("default", DEFAULT_POSE_MODEL)):
        model = _model(mpath)
        rxy, rvis = _random_people(model, 48, 7)
        _lift_all(f"{mname}/ref", mpath, ref_xy, ref_vis, out, one_by_one=True)
        _lift_all(f"{mname}/random", mpath, rxy, rvis, out, one_by_one=False)
        print(f"{mname}: {len(out)} arrays", flush=True)
    if estimate:
        _estimates(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{k.replace("/", "|"): v for k, v in out.items()})
    print(f"saved {len(out)} arrays to {path}")


def compare(a_path: Path, b_path: Path, detail: str | None = None) -> int:
    with np.load(a_path, allow_pickle=False) as fa, np.load(b_path, allow_pickle=False) as fb:
        a = {k: fa[k] for k in fa.files}
        b = {k: fb[k] for k in fb.files}
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    groups: dict[str, list[tuple[str, bool, float, float]]] = {}
    bad_shape: list[str] = []
    exact_diff: list[str] = []
    paths = 0
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if x.dtype.kind in "US" and "/" in str(x):  # a file path: differs by checkout
            paths += 1
            continue
        if x.shape != y.shape or (x.dtype.kind in "US") != (y.dtype.kind in "US"):
            bad_shape.append(f"{k}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}")
            continue
        same = bool(np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))
        if x.dtype.kind in "fc":
            both_nan = np.isnan(x) & np.isnan(y)
            if (np.isnan(x) != np.isnan(y)).any():
                bad_shape.append(f"{k}: NaN pattern differs")
            d = np.where(both_nan, 0.0, np.abs(x.astype(np.float64) - y))
            ad = float(np.nanmax(d)) if d.size else 0.0
            rd = float(np.nanmax(d / (1.0 + np.abs(np.where(both_nan, 0.0, x))))) if d.size \
                else 0.0
        else:  # integers, booleans, strings: counted apart
            ad = rd = 0.0
            if not same:
                exact_diff.append(f"{k}: {int((x != y).sum())} of {x.size} entries differ")
        parts = k.split("|")
        g = "|".join(parts[:3]) if parts[0] != "estimate" else "|".join(parts[:3])
        groups.setdefault(g, []).append((k, same, ad, rd))
        if detail and k.startswith(detail) and not same:
            print(f"  {k}: max |diff| {ad:.3e}, rel {rd:.3e}")
    print(f"{'group':<44} {'arrays':>7} {'bit-equal':>10} {'max |diff|':>11} "
          f"{'max rel':>10}  worst")
    tot_abs = tot_rel = 0.0
    for g, rows in groups.items():
        worst = max(rows, key=lambda r: r[3])
        ad, rd = max(r[2] for r in rows), max(r[3] for r in rows)
        tot_abs, tot_rel = max(tot_abs, ad), max(tot_rel, rd)
        print(f"{g:<44} {len(rows):7d} {sum(r[1] for r in rows):10d} {ad:11.3e} {rd:10.3e}"
              f"  {worst[0].split('|', 3)[-1] if not worst[1] else ''}")
    n = sum(len(r) for r in groups.values())
    print(f"\n{n} arrays compared, {sum(r[1] for g in groups.values() for r in g)} bit-equal; "
          f"max |diff| {tot_abs:.3e}, max |diff| / (1 + |before|) {tot_rel:.3e}; "
          f"{paths} file paths not compared")
    print("(max |diff| and max rel are over the float arrays)")
    for title, items in (("integer/bool/string arrays that differ", exact_diff),
                         ("only before", missing), ("only after", extra),
                         ("shape/dtype/NaN mismatch", bad_shape)):
        if items:
            print(f"{title} ({len(items)}):", *items[:20], sep="\n  ")
    return 0 if not (missing or extra or bad_shape or exact_diff) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("out", type=Path)
    s.add_argument("--no-estimate", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--detail", default=None,
                   help="list the arrays that differ whose key starts with this")
    args = ap.parse_args()
    if args.cmd == "save":
        save(args.out, not args.no_estimate)
        return 0
    return compare(args.before, args.after, args.detail)


if __name__ == "__main__":
    raise SystemExit(main())
