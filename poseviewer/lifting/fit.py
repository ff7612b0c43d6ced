"""The fit: ``lift`` runs spec steps 1-5 for a batch of people (numpy, float64, CPU).

People are grouped by visibility pattern. A pattern whose operators are cached
(``cache.PatternOps``) is lifted with a few matrix products; an uncached pattern is
prepared (and cached) once ``model.build_min`` people with it have been met (in this call
and earlier ones since it was last dropped from the cache), otherwise solved directly with
``direct.fit_pairs`` (rare patterns cost what a direct solve costs; preparing a pattern
costs about as much as solving ~30 people directly); ``lift_method = "direct"`` solves
every pattern directly. The elevation grid follows the same rule: a pattern is prepared
(``elevation.build``; it keeps its pairs, not the yaw-only operators, until a yaw-only fit
needs them) once ``build_min`` people have shown it, and until then its people are solved
directly over the grid (``elevation.fit_direct``, about a third of a preparation's cost
for up to 8 people of a pattern).
Steps 4 and 5 (component choice, reconstruction, blend, size normalisation, projection)
then run for the whole batch: for one person the whole lift is a few dozen small numpy
operations.

The model is read through ``LiftingModel``, the public attributes of
``model.LiftingModel`` that the fit uses (this module does not import the model).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import NamedTuple, Protocol

import numpy as np

from poseviewer.lifting import cache, covariance, direct, elevation, spec
from poseviewer.lifting.params import ModelArrays
from poseviewer.lifting.result import ComponentFits, LiftResult

SCALE_CAP = spec.SCALE_CAP
#: ``LiftingModel.lift_method`` values.
LIFT_METHODS = ("auto", "operators", "direct")


class LiftingModel(Protocol):
    """What the fit reads of a 3D model (``model.LiftingModel``)."""

    @property
    def arrays(self) -> ModelArrays:
        """The parameters and what the fit derives from them (H36M's head observed)."""
        ...

    pattern_cache: cache.PatternCache
    build_min: int
    lift_method: str
    lift_threads: int | None
    cov_scale: float
    elevations: tuple[float, ...]
    elevation_spike: float

    def elevation_grid(self, release_exact: bool) -> tuple[np.ndarray, int] | None:
        """(elevations in radians, the level one's index), or None: the yaw-only fit."""
        ...

    def observed_arrays(self) -> ModelArrays:
        """``arrays`` with the head slot observed as the elevation grid's fit sees it."""
        ...


_BLAS: list[object] = []  # the threadpoolctl controller, made on first need
_BLAS_LOCK = threading.RLock()


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` BLAS threads (None: numpy's setting), under one lock: the
    count is process-wide. Used around the large products only (preparing a pattern, the
    residuals of 64 or more people): setting it costs ~20 us, and OpenBLAS's own threads
    wait on each other for a long time on a machine loaded by other work."""
    if n is None:
        yield
        return
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        with _BLAS_LOCK:
            if not _BLAS:
                ctl = ThreadpoolController()
                _BLAS.extend([ctl, ctl.select(user_api="blas").lib_controllers])
    libs: list[object] = _BLAS[1]  # type: ignore[assignment]
    if all(lib.num_threads == n for lib in libs):  # type: ignore[attr-defined]
        yield  # already so (OMP_NUM_THREADS=1, say): nothing to set (a ctypes call each)
        return
    with _BLAS_LOCK, _BLAS[0].limit(limits=n, user_api="blas"):  # type: ignore[attr-defined]
        yield


#: Joint counts of the 3D model and of the 2D input, and the flattened (x..., y..., z...)
#: offsets of a 3D pose's rows.
_J3, _J2 = spec.NUM_JOINTS_3D, spec.NUM_JOINTS_2D
_X3, _XYZ3 = 2 * _J3, 3 * _J3
_BITS = 1 << np.arange(_J2, dtype=np.int64)


def pattern_key(mask: np.ndarray) -> np.ndarray:
    """Integer key of each visibility row (..., 14) bool (observed-slot order)."""
    return mask.astype(np.int64) @ _BITS[: mask.shape[-1]]


def fit_groups(model: LiftingModel, u: np.ndarray, v: np.ndarray, release_exact: bool,
               keep_all: bool, all_visible: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None,
                          np.ndarray, np.ndarray]:
    """Steps 2 and 3 for every person and component.

    ``u`` (N, 29) = [w_x (14), w_y (14), 1] normalised joints (zero where invisible), ``v``
    (N, 14) bool. Returns coefficients a (N, K, 4 + B) (a_0 = scale, not divided), the
    residual at the chosen angle (N, K) (not halved), the angle index (N, K), capped (N, K),
    all residuals (N, K, A) when ``keep_all``, and the noise terms of the joint
    covariances at the chosen angles (``covariance.fit_noise_terms``): the covariances times
    the t factor (N, K, 17, 3, 3) in normalised units and (lambda_d^2 / dof, dof) (N, K, 2).
    ``all_visible``: every joint of every person is visible (skips the pattern keys).
    """
    n = len(u)
    keys = None if all_visible and n else pattern_key(v)
    if n and (keys is None or n == 1 or keys.min() == keys.max()):  # one pattern: no scatter
        key = (1 << v.shape[1]) - 1 if keys is None else int(keys[0])
        ops = _prepared(model, key, n, v[0])
        if ops is not None:
            return _fit_prepared(model, ops, u, release_exact, keep_all)
        groups = [(key, np.arange(n))]
        seen = True
    else:
        uniq, inv = np.unique(keys, return_inverse=True)
        groups = [(int(k), np.flatnonzero(inv == g)) for g, k in enumerate(uniq)]
        seen = False
    K, nb, A = model.arrays.num_components, model.arrays.num_basis + 4, spec.NUM_ANGLES
    coeffs = np.empty((n, K, nb))
    res = np.empty((n, K))
    ang = np.empty((n, K), dtype=np.int64)
    capped = np.zeros((n, K), dtype=bool)
    allres = np.empty((n, K, A)) if keep_all else None
    cov_t = np.empty((n, K, _J3, 3, 3))
    qd = np.empty((n, K, 2))
    direct_idx: list[np.ndarray] = []
    for key, idx in groups:
        ops = None if seen else _prepared(model, key, len(idx), v[idx[0]])
        if ops is None:
            direct_idx.append(idx)
            continue
        got = _fit_prepared(model, ops, u[idx], release_exact, keep_all)
        coeffs[idx], res[idx], ang[idx], capped[idx] = got[:4]
        if allres is not None:
            allres[idx] = got[4]
        cov_t[idx], qd[idx] = got[5], got[6]
    if direct_idx:  # every unprepared pattern in one batched direct solve
        idx = np.concatenate(direct_idx) if len(direct_idx) > 1 else direct_idx[0]
        cov_t[idx], qd[idx] = _fit_direct(model.arrays, u[idx], v[idx], release_exact, idx,
                                          (coeffs, res, ang, capped, allres))
    return coeffs, res, ang, capped, allres, cov_t, qd


def _fit_direct(arrays: ModelArrays, u: np.ndarray, v: np.ndarray, release_exact: bool,
                idx: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                            np.ndarray | None]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-3 of people ``u``, ``v`` by ``direct.fit_pairs`` (no operators), into
    ``out`` (coefficients, residual, angle, capped, all residuals) at ``idx``. Returns the
    covariances' noise terms (``covariance.fit_noise_terms``) (n, K, ...)."""
    n = len(idx)
    d = arrays
    K = d.num_components
    J = v.shape[1]
    pn = np.repeat(np.arange(n), K)
    pk = np.tile(np.arange(K), n)
    vf = v.astype(np.float64)

    def per_pair(pn: np.ndarray, pk: np.ndarray) -> list[np.ndarray]:
        return [u[pn, :J], u[pn, J : 2 * J], vf[pn], d.ex[pk], d.ey[pk], d.ez[pk],
                d.mux[pk], d.muy[pk], d.muz[pk], d.rho[pk], d.lam[pk]]

    fit = direct.fit_pairs(*per_pair(pn, pk))
    rs, a, r, c = fit.residuals, fit.angle, fit.residual, fit.coeffs
    cp = c[:, 0] > SCALE_CAP
    if cp.any():
        sel = np.flatnonzero(cp)
        cf = direct.fit_pairs(*per_pair(pn[sel], pk[sel]), cap=SCALE_CAP,
                              release_exact=release_exact)
        rs[sel], a[sel], r[sel], c[sel] = cf.residuals, cf.angle, cf.residual, cf.coeffs
    _store(idx, (c, r, a, cp, rs), out)
    got_cov, got_fit = covariance.joint_cov(d, v[pn], pk, a, fitted=True)
    return covariance.fit_noise_terms(got_cov.reshape(n, K, _J3, 3, 3), got_fit.reshape(n, K),
                                      2.0 * vf.sum(-1)[:, None], d.lam)


def _prepared(model: LiftingModel, key: int, people: int, mask: np.ndarray,
              force: bool = False) -> cache.PatternOps | None:
    """The cached operators of pattern ``key``, prepared now once ``model.build_min``
    people have met it (``force``: now); None: solve directly (always with
    ``lift_method = "direct"`` unless ``force``)."""
    if model.lift_method == "direct" and not force:
        return None
    pc = model.pattern_cache
    ops = pc.get(key)
    if ops is not None and not ops.full:  # the grid's pairs only: the yaw-only operators
        with blas_threads(model.lift_threads):
            full = cache.build(model.arrays, mask)
        full.elev, full.noise = ops.elev, ops.noise
        pc.put(key, full)
        return full
    if ops is None and (pc.count(key, people) >= model.build_min or force):
        with blas_threads(model.lift_threads):
            ops = cache.build(model.arrays, mask)
        pc.put(key, ops)
    return ops


def fit_groups_elevated(model: LiftingModel, u: np.ndarray, v: np.ndarray, keep_all: bool,
                        grid: tuple[np.ndarray, int]) -> tuple[np.ndarray, ...]:
    """``fit_groups`` over the yaw x elevation grid (``elevation``): the same outputs with
    the elevation index (N, K) after the angle index; a pattern's operators are prepared
    once ``model.build_min`` people have shown it (the cache's memory budget bounds them),
    its people solved directly until then (and always with ``lift_method = "direct"``)."""
    n = len(u)
    elev, level = grid
    K, nb, A, E = (model.arrays.num_components, model.arrays.num_basis + 4, spec.NUM_ANGLES,
                   len(elev))
    keys = pattern_key(v)
    if n == 1 or keys.min() == keys.max():  # one pattern: no scatter
        return _fit_elevated(model, int(keys[0]), v[0], u, keep_all, grid)
    uniq, inv = np.unique(keys, return_inverse=True)
    out = [np.empty((n, K, nb)), np.empty((n, K)), np.empty((n, K), dtype=np.int64),
           np.empty((n, K), dtype=np.int64), np.empty((n, K)), np.zeros((n, K), dtype=bool),
           np.empty((n, K, E * A)) if keep_all else None, np.empty((n, K, _J3, 3, 3)),
           np.empty((n, K, 2))]
    for g, key in enumerate(uniq):
        idx = np.flatnonzero(inv == g)
        got = _fit_elevated(model, int(key), v[idx[0]], u[idx], keep_all, grid)
        for o, x in zip(out, got, strict=True):
            if o is not None:
                o[idx] = x
    return tuple(out)


def _fit_elevated(model: LiftingModel, key: int, mask: np.ndarray, ug: np.ndarray,
                  keep_all: bool, grid: tuple[np.ndarray, int]) -> tuple[np.ndarray, ...]:
    """One pattern of ``fit_groups_elevated``: its prepared operators, prepared now once
    ``model.build_min`` people have shown it, or a direct solve."""
    pc = model.pattern_cache
    ops = pc.get(key)
    elev, level = grid
    spike = float(model.elevation_spike)
    obs = model.observed_arrays()
    gkey = (tuple(model.elevations), spike, obs.head_top)
    eops = None if ops is None else ops.elev.get(gkey)
    if eops is None and (model.lift_method == "direct"
                         or pc.count(key, len(ug)) < model.build_min):
        # a rare pattern: every rotation solved directly for these people (nothing kept)
        with blas_threads(model.lift_threads):
            return elevation.fit_direct(obs, model.arrays, mask, ug, keep_all, elev, level,
                                        spike)
    if ops is None:  # the grid needs the pattern's pairs only (not the yaw-only operators)
        ops = cache.pairs_only(model.arrays, mask)
        pc.put(key, ops)
    if eops is None:
        with blas_threads(model.lift_threads):
            eops = elevation.build(obs, ops, elev, level, spike)
        ops.elev = {gkey: eops}  # one grid at a time
        model.pattern_cache.trim()
    # the residuals of K x 700 rotations: a product large enough for OpenBLAS to thread it
    # (its threads wait on each other for milliseconds on a loaded machine): on
    # lift_threads BLAS threads, even for one person (the setting costs ~20 us)
    with blas_threads(model.lift_threads):
        return elevation.fit_prepared(obs, model.arrays, ops, eops, ug, keep_all,
                                      model.pattern_cache)


def _fit_prepared(model: LiftingModel, ops: cache.PatternOps, ug: np.ndarray,
                  release_exact: bool, keep_all: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                             np.ndarray | None, np.ndarray, np.ndarray]:
    """``fit_groups``'s outputs for people ``ug`` (n, 29) sharing the pattern of ``ops``."""
    n = len(ug)
    K, A = ops.coef.shape[:2]
    feats = ug.take(ops.full_i, axis=1)
    feats *= ug.take(ops.full_j, axis=1)
    if n >= 64:  # a large product: on lift_threads BLAS threads
        with blas_threads(model.lift_threads):
            r = feats @ ops.res_packed
    else:
        r = feats @ ops.res_packed
    r = r.reshape(n, K, A)
    best = r.argmin(-1)  # (n, K), first minimum on ties
    flat = best + ops.koff  # (n, K) flat (component, angle) indices
    rb = r.reshape(-1).take(flat) if n == 1 else r.min(-1)  # the residual there
    a = (ops.coef_flat.take(flat, axis=0) @ ug[:, None, :, None])[..., 0]  # (n, K, nb)
    if a[..., 0].max() <= SCALE_CAP:
        cp = np.zeros((n, K), dtype=bool)
    else:
        cp = a[..., 0] > SCALE_CAP
        with blas_threads(model.lift_threads):
            rc, cc = cache.capped_ops(ops, model.arrays, release_exact)
        for i, k in zip(*np.nonzero(cp), strict=True):  # rare: a loop
            uu = ug[i]
            rr = (rc[k] @ uu) @ uu  # (A,)
            j = int(rr.argmin())
            r[i, k] = rr
            best[i, k] = j
            rb[i, k] = rr[j]
            a[i, k] = cc[k, j] @ uu
        flat = best + ops.koff
    cov_t, qd = ops.noise.get(model.arrays, flat)
    return a, rb, best, cp, (r if keep_all else None), cov_t, qd


def _store(idx: np.ndarray, flat: tuple[np.ndarray, ...],
           out: tuple[np.ndarray | None, ...]) -> None:
    """Flat (person, component) pair results (coefficients, residual, angle, capped, all
    residuals) into the (N, K, ...) arrays ``out`` at people ``idx`` (None: not kept)."""
    for x, o in zip(flat, out, strict=True):
        if o is not None:
            o[idx] = x.reshape((len(idx),) + o.shape[1:])


def normalise(j: np.ndarray, vis: np.ndarray, obs_src: np.ndarray, xy_index: np.ndarray,
              min_visible: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Step 1 per person: (u (N, 29) = [w_x (14), w_y (14), 1], the observed slots'
    normalised joints (zero where invisible), v (N, 14), lifted (N,), centre (N, 2),
    m (N,), whether every joint of every person is visible and every person lifted).
    ``xy_index``: the x's, then the y's, of the joints ``obs_src`` in a flattened (14, 2)
    joint array."""
    n, J = len(j), len(obs_src)
    # the observed slots' joints, x block then y block, (N, 2J): one gather
    w = np.ascontiguousarray(j).reshape(n, 2 * j.shape[1]).take(xy_index, axis=1)
    u = np.empty((n, 2 * J + 1))
    u[:, 2 * J] = 1.0
    uw = u[:, : 2 * J].reshape(n, 2, J)  # a view: x block, y block
    if n and vis.all():  # every joint visible (the common case): no masks; the same arithmetic
        y = w[:, J:]
        ymax, ymin = y.max(-1), y.min(-1)
        lifted = ymax > ymin  # (14 >= min_visible joints)
        if lifted.all():
            w2 = w.reshape(n, 2, J)
            centre = w2.sum(-1) / float(J)
            m = (ymin - ymax) * 0.5
            np.subtract(w2, centre[:, :, None], out=uw)
            uw *= (1.0 / m)[:, None, None]
            return u, vis, lifted, centre, m, True
    w = w.reshape(n, 2, J).swapaxes(1, 2)  # (N, J, 2)
    v = vis[:, obs_src]
    y = w[..., 1]
    ymax = np.where(v, y, -np.inf).max(-1)
    ymin = np.where(v, y, np.inf).min(-1)
    # fewer than min_visible joints, or no height (-inf when none is visible)
    lifted = (v.sum(-1) >= min_visible) & ((ymax - ymin) > 0)
    if not lifted.all():  # people who cannot be lifted: a harmless dummy, NaN later
        v = np.where(lifted[:, None], v, True)
        w = np.where(v[..., None] & lifted[:, None, None], w, 0.0)
        y = w[..., 1]
        ymax = np.where(v, y, -np.inf).max(-1)
        ymin = np.where(v, y, np.inf).min(-1)
    vf = v.astype(np.float64)
    if not v.all():
        w = np.where(v[..., None], w, 0.0)  # invisible joints may hold anything (NaN too)
    centre = w.sum(1) / vf.sum(1)[:, None]
    m = (ymin - ymax) * 0.5
    if not m.all():
        m = np.where(m == 0, 1.0, m)
    uw[...] = ((w - centre[:, None, :]) * (vf / m[:, None])[..., None]).swapaxes(1, 2)
    return u, v, lifted, centre, m, False


_MAPS: _BlendMaps | None = None


class _BlendMaps(NamedTuple):
    """Constant matrices of step 5 (rows x, y, z of the 17 joints flattened to 51; the
    observed slots' normalised joints as in u, x block then y block, 28)."""

    sk_map: np.ndarray  #: (14, 51): v @ sk_map - 1 = the blend's factor on the model pose
    #: (-1, or kb - 1 on the visible joints' x and z rows)
    sk_all: np.ndarray  #: (51,): that factor with every joint visible
    af_map: np.ndarray  #: (28, 51): w @ af_map = the observation's share (-kb w_x on x,
    #: kb w_y on z)
    img_map: np.ndarray  #: (51, 62): the model pose's normalised image coordinates (x, -z):
    #: columns 0-33 every joint's (x, y) pair, 34-61 the observed slots' as in u (to compare
    #: with the observation)
    bone_map: np.ndarray  #: (51, 48): the bone vectors (child - parent) of rows x, y, z
    img_y: np.ndarray  #: (62,): 1 on img_map's image-y columns
    depth_map: np.ndarray  #: (51, 62): -X_y on img_map's image-y columns (a tilted camera
    #: sees -(sin e X_y + cos e X_z))
    blend_x: np.ndarray  #: (14, 51): kb on the x rows of the observed slots
    blend_y: np.ndarray  #: (14, 51): -kb on their y rows
    blend_z: np.ndarray  #: (14, 51): -kb on their z rows


def _blend_maps() -> _BlendMaps:
    """The constant matrices of step 5's blend, projection and residual (built once)."""
    global _MAPS
    if _MAPS is None:
        obs = spec.OBS_SLOTS
        J = len(obs)
        kb = spec.BLEND_WEIGHT / (1.0 + spec.BLEND_WEIGHT)
        sk = np.zeros((J, _XYZ3))
        af = np.zeros((2 * J, _XYZ3))
        img = np.zeros((_XYZ3, _X3 + 2 * J))
        for jt in range(_J3):
            img[jt, 2 * jt] = 1.0
            img[_X3 + jt, 2 * jt + 1] = -1.0
        for i, slot in enumerate(obs):
            sk[i, slot] = sk[i, _X3 + slot] = kb
            af[i, slot] = -kb
            af[J + i, _X3 + slot] = kb
            img[slot, _X3 + i] = 1.0
            img[_X3 + slot, _X3 + J + i] = -1.0
        img_y = np.zeros(_X3 + 2 * J)
        img_y[1:_X3:2] = 1.0
        img_y[_X3 + J :] = 1.0
        depth = np.zeros((_XYZ3, _X3 + 2 * J))
        for jt in range(_J3):
            depth[_J3 + jt, 2 * jt + 1] = -1.0
        bx, by, bz = (np.zeros((J, _XYZ3)) for _ in range(3))
        for i, slot in enumerate(obs):
            depth[_J3 + slot, _X3 + J + i] = -1.0
            bx[i, slot] = kb
            by[i, _J3 + slot] = -kb
            bz[i, _X3 + slot] = -kb
        _MAPS = _BlendMaps(sk, np.ones(J) @ sk - 1.0, af, img,
                           np.kron(np.eye(3), spec.bone_matrix()), img_y, depth, bx, by, bz)
    return _MAPS


#: people x components up to which the poses of step 5.1 come from one gathered product
#: with the precomputed rotated basis (faster for small batches); larger batches rotate
#: in place (``model_pose``: less memory)
GATHER_MAX = 96


def lift(model: LiftingModel, j: np.ndarray, vis: np.ndarray, inter: bool,
         release_exact: bool) -> LiftResult | tuple[LiftResult, dict[str, np.ndarray]]:
    """Spec steps 1-5 for checked inputs ``j`` (N, 14, 2) float64 and ``vis`` (N, 14) bool
    (``PoseModel3D.lift`` checks them); with ``inter`` also the intermediates."""
    OBS_SLOTS, OBS_SOURCES = spec.OBS_SLOTS, spec.OBS_SOURCES
    n_people = j.shape[0]
    arrays = model.arrays
    u, v, lifted, centre, m, all_vis = normalise(j, vis, OBS_SOURCES, spec.XY_INDEX,
                                                 spec.MIN_VISIBLE)
    grid = model.elevation_grid(release_exact)
    eidx, tz = None, np.zeros((n_people, arrays.num_components))
    if grid is None:
        coeffs, res, ang, capped, allres, cov_t, qd = fit_groups(model, u, v, release_exact,
                                                                 inter, all_vis)
    else:
        coeffs, res, ang, eidx, tz, capped, allres, cov_t, qd = fit_groups_elevated(
            model, u, v, inter, grid)
    K = coeffs.shape[1]
    J2 = u.shape[1] - 1
    # Step 3 (end) and 4.
    scale = coeffs[..., 0]
    s2 = scale * scale
    residual = res * 0.5
    score = arrays.lgdet * s2
    if eidx is not None:  # the size term x cos e (see spec.ELEVATION_SPIKE)
        score *= np.cos(grid[0][eidx])
    score += residual
    best = score.argmin(1)
    all_lifted = all_vis or bool(lifted.all())
    if not all_lifted:
        best[~lifted] = 0
    # Step 5 for every component, rows (x, y, z) of X = U^T (mu + sum c E) (-|s|), (N, K, 51).
    if n_people * K <= GATHER_MAX:
        koff = np.arange(K) * spec.NUM_ANGLES
        rec_model = (coeffs[:, :, None, :] @ arrays.mrot.take(ang + koff, axis=0))[:, :, 0]
        if scale.size and scale.max() >= 0:  # else -|s| = s for every fitted (capped) scale
            rec_model *= -np.sign(scale)[..., None]
    else:
        rec_model = model_pose(arrays, scale, ang, coeffs[..., 1:] / coeffs[..., :1]).reshape(
            n_people, K, _XYZ3)
    maps = _blend_maps()
    # the projection (first two rows of C X: (X_x, -X_z), normalised) of every joint and,
    # from the same product, of the observed slots (as in u) for the fit's residual
    proj = rec_model @ maps.img_map  # (N, K, 62)
    if eidx is not None:  # a tilted camera: image y = -(sin e X_y + cos e X_z)
        elev = grid[0][eidx]
        se, ce = np.sin(elev)[..., None], np.cos(elev)[..., None]
        proj *= 1.0 + maps.img_y * (ce - 1.0)
        proj += se * (rec_model @ maps.depth_map)
    else:
        elev = np.zeros(scale.shape)
    if eidx is not None:  # the level camera's vertical shift (the model's mean pose is
        # centred on 17 joints, the observation on the visible ones)
        proj += tz[..., None] * maps.img_y
        a = model.observed_arrays().head_top
        if a:  # the head slot shows, and is compared as, LSP's head top
            i = int(np.flatnonzero(OBS_SLOTS == spec.HEAD_SLOT)[0])
            h, th = 2 * spec.HEAD_SLOT, 2 * spec.THORAX_SLOT
            top = (1.0 + a) * proj[..., h : h + 2] - a * proj[..., th : th + 2]
            proj[..., h : h + 2] = top
            proj[..., _X3 + i] = top[..., 0]
            proj[..., _X3 + J2 // 2 + i] = top[..., 1]
    joints_img = proj[..., :_X3].reshape(n_people, K, _J3, 2) * m[:, None, None, None]
    joints_img += centre[:, None, None, :]
    # blend with the observation on the visible joints: X = -(C^T Y); per coordinate
    # rec_blend = rec_model * sk + af (x: -(x keep + w_x kb), y: -y, z: -z keep + w_y kb)
    vf = None if all_vis else v.astype(np.float64)
    if eidx is not None:  # along the tilted image plane: -X + kb (proj - w) (visible)
        d = proj[..., _X3:] - u[:, None, :J2]  # (N, K, 28)
        if vf is not None:
            d *= np.concatenate([vf, vf], 1)[:, None, :]
        dx, dy = d[..., : J2 // 2], d[..., J2 // 2 :]
        rec_blend = dx @ maps.blend_x
        rec_blend += (se * dy) @ maps.blend_y
        rec_blend += (ce * dy) @ maps.blend_z
        rec_blend -= rec_model
    elif vf is None:
        rec_blend = rec_model * maps.sk_all
        rec_blend += (u[:, :J2] @ maps.af_map)[:, None, :]
    else:
        rec_blend = rec_model * (vf @ maps.sk_map - 1.0)[:, None, :]
        rec_blend += (u[:, :J2] @ maps.af_map)[:, None, :]
    bones = (rec_blend @ maps.bone_map)[..., None, :]  # (N, K, 1, 48)
    size2 = (bones @ bones.swapaxes(-1, -2))[..., 0, 0]  # (N, K) total bone size squared
    g = spec.OUTPUT_SIZE / np.sqrt(size2)
    pose = (rec_blend * g[..., None]).reshape(n_people, K, 3, _J3)
    if grid is not None:  # a tilted camera's vertical shift is a depth translation: the
        # depth origin is put at the joint centroid (the pose's shape is unchanged)
        pose[:, :, 1] -= pose[:, :, 1].mean(-1, keepdims=True)
    pose_3d = pose.swapaxes(-1, -2)
    # the noise from the fit's own residual: its projection against the visible joints
    if eidx is None:
        d = proj[..., _X3:] - u[:, None, :J2]  # (N, K, 28)
        if vf is not None:
            d *= np.concatenate([vf, vf], 1)[:, None, :]
    rss = (d[..., None, :] @ d[..., :, None])[..., 0, 0]
    # joint_cov x the t factor x cov_scale x (scale x size factor)^2 x the noise ratio
    # (``covariance.fit_noise_terms``)
    jf = rss * qd[..., 0]
    np.maximum(jf, s2, out=jf)
    cs = model.cov_scale if grid is None else model.cov_scale * spec.ELEVATION_COV_FACTOR
    jf *= (spec.OUTPUT_SIZE**2 * cs) / size2  # x g^2 x cov_scale
    jcov = cov_t * jf[..., None, None, None]
    dof = qd[..., 1]
    theta = spec.THETA.take(ang)
    c = coeffs[..., 1:] / coeffs[..., :1]

    if not all_lifted:
        bad = ~lifted

        def mask(x: np.ndarray) -> np.ndarray:
            x = x.astype(np.float64, copy=True)
            x[bad] = math.nan
            return x
    else:
        def mask(x: np.ndarray) -> np.ndarray:
            return x

    pose_3d, joints_img, jcov, dof = mask(pose_3d), mask(joints_img), mask(jcov), mask(dof)
    comps = ComponentFits(
        pose_3d=pose_3d, score=mask(score), residual=mask(residual), scale=mask(scale),
        yaw=mask(theta), coeffs=mask(c), joints_2d=joints_img, joint_cov=jcov,
        joint_cov_dof=dof, elevation=mask(elev), shift=mask(tz))
    if n_people == 1:  # a copy of the best component (basic indexing: cheaper)
        b = int(best[0])

        def pick(x: np.ndarray) -> np.ndarray:
            return x[:, b].copy()
    else:
        ar = np.arange(n_people)

        def pick(x: np.ndarray) -> np.ndarray:
            return x[ar, best]
    result = LiftResult(
        pose_3d=pick(pose_3d), component=best, lifted=lifted, joints_2d=pick(joints_img),
        components=comps, centre=mask(centre), norm=mask(m), joint_cov=pick(jcov),
        joint_cov_dof=pick(dof), elevation=pick(mask(elev)))
    if not inter:
        return result
    w17 = np.zeros((n_people, 2, _J3))
    w17[:, :, OBS_SLOTS] = u[:, :J2].reshape(n_people, 2, J2 // 2)
    v17 = np.zeros((n_people, _J3), dtype=bool)
    v17[:, OBS_SLOTS] = v
    rec_model = rec_model.reshape(n_people, K, 3, _J3)
    rec_blend = rec_blend.reshape(n_people, K, 3, _J3)
    rec_renorm = rec_blend * (0.97 / np.sqrt(size2))[..., None, None]
    extra = {
        "transformed_xy": j[:, OBS_SOURCES, :], "weights": v17 & lifted[:, None],
        "norm_pose": mask(w17), "m": mask(m), "centre": mask(centre),
        "residuals": mask(allres), "angle": ang,
        "sincos": mask(np.stack([np.sin(theta), np.cos(theta)], -1)),
        "rec_model": mask(rec_model), "rec_blend": mask(rec_blend),
        "rec_renorm": mask(rec_renorm), "pose_3d": mask(pose), "capped": capped,
        "elevation": mask(elev),
    }
    return result, extra


def model_pose(arrays: ModelArrays, scale: np.ndarray, ang: np.ndarray, c: np.ndarray
               ) -> np.ndarray:
    """Step 5.1: X = U(theta)^T (mu + sum c_i E_i) (-|s|), (N, K, 3, 17), for the angle
    indices ``ang`` (N, K)."""
    n, k = scale.shape
    ext = arrays.ext  # (K, 3 + B, 51)
    x0 = arrays.mu[None] + (c[:, :, None, :] @ ext[None])[:, :, 0].reshape(n, k, 3, _J3)
    s, co = spec.SIN[ang][..., None], spec.COS[ang][..., None]
    a = -np.abs(scale)[..., None]
    out = np.empty_like(x0)
    out[:, :, 0] = (s * x0[:, :, 0] + co * x0[:, :, 1]) * a
    out[:, :, 1] = (-co * x0[:, :, 0] + s * x0[:, :, 1]) * a
    out[:, :, 2] = x0[:, :, 2] * a
    return out
