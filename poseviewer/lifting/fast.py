"""The CPU fast path of ``PoseModel3D.lift``: cached per-pattern operators + numpy.

People are grouped by visibility pattern. A pattern whose operators are cached
(``operators.PatternOps``) is lifted with a few matrix products; an uncached pattern is
prepared (and cached) once ``model.build_min`` people with it have been met (in this call
and earlier ones since it was last dropped from the cache), otherwise solved directly with
``solve`` (for a few people its numpy solver, called straight: rare patterns cost what a
direct solve costs; preparing a pattern costs about as much as solving ~30 people
directly). Steps 4 and 5 (component choice, reconstruction, blend, size normalisation,
projection) then run in
numpy for the whole batch: for one person the whole lift is a few dozen small numpy
operations.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from poseviewer.lifting import elevation, operators, solve
from poseviewer.lifting.result import ComponentFits, LiftResult
from poseviewer.result import SCALE_CAP

if TYPE_CHECKING:
    from poseviewer.lifting.model import PoseModel3D

_BITS = 1 << np.arange(14, dtype=np.int64)


def pattern_key(mask: np.ndarray) -> np.ndarray:
    """Integer key of each visibility row (..., 14) bool (observed-slot order)."""
    return mask.astype(np.int64) @ _BITS[: mask.shape[-1]]


def fit_groups(model: PoseModel3D, u: np.ndarray, v: np.ndarray, release_exact: bool,
               keep_all: bool, all_visible: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None,
                          np.ndarray, np.ndarray]:
    """Steps 2 and 3 for every person and component.

    ``u`` (N, 29) = [w_x (14), w_y (14), 1] normalised joints (zero where invisible), ``v``
    (N, 14) bool. Returns coefficients a (N, K, 4 + B) (a_0 = scale, not divided), the
    residual at the chosen angle (N, K) (not halved), the angle index (N, K), capped (N, K),
    all residuals (N, K, A) when ``keep_all``, and the noise terms of the joint
    covariances at the chosen angles (``solve.fit_noise_terms``): the covariances times
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
    K, nb, A = model.num_components, model.num_basis + 4, solve.NUM_ANGLES
    coeffs = np.empty((n, K, nb))
    res = np.empty((n, K))
    ang = np.empty((n, K), dtype=np.int64)
    capped = np.zeros((n, K), dtype=bool)
    allres = np.empty((n, K, A)) if keep_all else None
    cov_t = np.empty((n, K, 17, 3, 3))
    qd = np.empty((n, K, 2))
    kr = np.arange(K)
    direct: list[np.ndarray] = []
    for key, idx in groups:
        ops = None if seen else _prepared(model, key, len(idx), v[idx[0]])
        if ops is None:
            direct.append(idx)
            continue
        got = _fit_prepared(model, ops, u[idx], release_exact, keep_all)
        coeffs[idx], res[idx], ang[idx], capped[idx] = got[:4]
        if allres is not None:
            allres[idx] = got[4]
        cov_t[idx], qd[idx] = got[5], got[6]
    if direct:  # every unprepared pattern in one batched direct solve
        idx = np.concatenate(direct) if len(direct) > 1 else direct[0]
        out = (coeffs, res, ang, capped, allres)
        if len(idx) * K <= solve.NUMPY_MAX_PAIRS:
            with model.torch_threads():  # the covariances' triangular solve is torch's
                cov_t[idx], qd[idx] = _direct_np(model, u[idx], v[idx], release_exact, idx,
                                                 out)
        else:
            with model.torch_threads():
                _direct(model, u[idx], v[idx], release_exact, idx, *out)
                pk = np.tile(kr, len(idx))
                vis = torch.from_numpy(np.repeat(v[idx], K, axis=0))
                got_cov, got_fit = operators.joint_cov(
                    model._ex, model._ey, model._ez, model.e, model._rho, model._lam,
                    model._sin, model._cos, vis, model._obs, torch.from_numpy(pk),
                    torch.from_numpy(ang[idx].reshape(-1)), fitted=True)
            n_obs = 2.0 * v[idx].sum(-1)[:, None]
            cov_t[idx], qd[idx] = solve.fit_noise_terms(
                got_cov.numpy().reshape(len(idx), K, 17, 3, 3),
                got_fit.numpy().reshape(len(idx), K), n_obs, model._np["lam"])
    return coeffs, res, ang, capped, allres, cov_t, qd


def _direct_np(model: PoseModel3D, u: np.ndarray, v: np.ndarray, release_exact: bool,
               idx: np.ndarray, out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                           np.ndarray | None]
               ) -> tuple[np.ndarray, np.ndarray]:
    """``_direct`` for a few people (n K <= ``solve.NUMPY_MAX_PAIRS`` pairs): the numpy
    solvers called straight on the model's numpy arrays, into ``out`` (coefficients,
    residual, angle, capped, all residuals) at ``idx``. Returns the covariances' noise
    terms (``solve.fit_noise_terms``) (n, K, ...)."""
    n = len(idx)
    d = model._np
    K = d["lam"].shape[0]
    J = v.shape[1]
    pn = np.repeat(np.arange(n), K)
    pk = np.tile(np.arange(K), n)
    vf = v.astype(np.float64)

    def per_pair(pn: np.ndarray, pk: np.ndarray) -> list[np.ndarray]:
        return [u[pn, :J], u[pn, J : 2 * J], vf[pn], d["ex"][pk], d["ey"][pk], d["ez"][pk],
                d["mux"][pk], d["muy"][pk], d["muz"][pk], d["rho"][pk], d["lam"][pk]]

    rs, a, r, c = solve._fit_pairs_np(*per_pair(pn, pk), d["sin"], d["cos"])
    cp = c[:, 0] > SCALE_CAP
    if cp.any():
        sel = np.flatnonzero(cp)
        rs[sel], a[sel], r[sel], c[sel] = solve._fit_pairs_np(
            *per_pair(pn[sel], pk[sel]), d["sin"], d["cos"], cap=SCALE_CAP,
            release_exact=release_exact)
    _store(idx, (c, r, a, cp, rs), out)
    got_cov, got_fit = operators._joint_cov_np(
        d["ex"], d["ey"], d["ez"], d["e"], d["rho"], d["lam"], d["sin"], d["cos"],
        v[pn], d["obs"], pk, a, fitted=True)
    return solve.fit_noise_terms(got_cov.reshape(n, K, 17, 3, 3), got_fit.reshape(n, K),
                                 2.0 * vf.sum(-1)[:, None], d["lam"])


def _prepared(model: PoseModel3D, key: int, people: int, mask: np.ndarray,
              force: bool = False) -> operators.PatternOps | None:
    """The cached operators of pattern ``key``, prepared now once ``model.build_min``
    people have met it (``force``: now); None: solve directly."""
    cache = model.pattern_cache
    ops = cache.get(key)
    if ops is None and (cache.count(key, people) >= model.build_min or force):
        with model.torch_threads():
            ops = operators.build(model._ex, model._ey, model._ez, model._mux,
                                  model._muy, model._muz, model._rho, model._lam,
                                  model._sin, model._cos, mask)
        cache.put(key, ops)
    return ops


def fit_groups_elevated(model: PoseModel3D, u: np.ndarray, v: np.ndarray, keep_all: bool,
                        grid: tuple[np.ndarray, int]) -> tuple[np.ndarray, ...]:
    """``fit_groups`` over the yaw x elevation grid (``elevation``): the same outputs with
    the elevation index (N, K) after the angle index; every pattern's operators are
    prepared (the cache's memory budget bounds them)."""
    n = len(u)
    elev, level = grid
    K, nb, A, E = model.num_components, model.num_basis + 4, solve.NUM_ANGLES, len(elev)
    keys = pattern_key(v)
    if n == 1 or keys.min() == keys.max():  # one pattern: no scatter
        return _fit_elevated(model, int(keys[0]), v[0], u, keep_all, grid)
    uniq, inv = np.unique(keys, return_inverse=True)
    out = [np.empty((n, K, nb)), np.empty((n, K)), np.empty((n, K), dtype=np.int64),
           np.empty((n, K), dtype=np.int64), np.empty((n, K)), np.zeros((n, K), dtype=bool),
           np.empty((n, K, E * A)) if keep_all else None, np.empty((n, K, 17, 3, 3)),
           np.empty((n, K, 2))]
    for g, key in enumerate(uniq):
        idx = np.flatnonzero(inv == g)
        got = _fit_elevated(model, int(key), v[idx[0]], u[idx], keep_all, grid)
        for o, x in zip(out, got, strict=True):
            if o is not None:
                o[idx] = x
    return tuple(out)


def _fit_elevated(model: PoseModel3D, key: int, mask: np.ndarray, ug: np.ndarray,
                  keep_all: bool, grid: tuple[np.ndarray, int]) -> tuple[np.ndarray, ...]:
    """One pattern of ``fit_groups_elevated`` (its operators prepared on first need)."""
    ops = _prepared(model, key, len(ug), mask, force=True)
    elev, level = grid
    spike = float(model.elevation_spike)
    gkey = (tuple(model.elevations), spike)
    obs = model.observed_arrays()
    gkey = gkey + (float(obs["head_top"][0]),)
    eops = ops.elev.get(gkey)
    if eops is None:
        eops = elevation.build(obs, ops, elev, level, spike)
        ops.elev = {gkey: eops}  # one grid at a time
        model.pattern_cache.trim()
    return elevation.fit_prepared(model, ops, eops, ug, keep_all)


def _fit_prepared(model: PoseModel3D, ops: operators.PatternOps, ug: np.ndarray,
                  release_exact: bool, keep_all: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                             np.ndarray | None, np.ndarray, np.ndarray]:
    """``fit_groups``'s outputs for people ``ug`` (n, 29) sharing the pattern of ``ops``."""
    n = len(ug)
    K, A = ops.coef.shape[:2]
    feats = ug.take(ops.full_i, axis=1)
    feats *= ug.take(ops.full_j, axis=1)
    if n >= 64:  # torch's GEMM on lift's thread count (numpy's BLAS has its own pool)
        with model.torch_threads():
            r = torch.from_numpy(feats).mm(ops.res_packed_t).numpy()
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
        got = ops.capped.get(release_exact)
        if got is None:
            with model.torch_threads():
                got = operators.capped_ops(ops, model._lam, model._sin, model._cos,
                                           release_exact)
        rc, cc = got
        for i, k in zip(*np.nonzero(cp), strict=True):  # rare: a loop
            uu = ug[i]
            rr = (rc[k] @ uu) @ uu  # (A,)
            j = int(rr.argmin())
            r[i, k] = rr
            best[i, k] = j
            rb[i, k] = rr[j]
            a[i, k] = cc[k, j] @ uu
        flat = best + ops.koff
    cov_t, qd = ops.noise.get(model, flat)
    return a, rb, best, cp, (r if keep_all else None), cov_t, qd


def _direct(model: PoseModel3D, u: np.ndarray, v: np.ndarray, release_exact: bool,
            idx: np.ndarray, coeffs: np.ndarray, res: np.ndarray, ang: np.ndarray,
            capped: np.ndarray, allres: np.ndarray | None) -> None:
    """Steps 2-3 for one group with ``solve.fit_pairs`` (no operators), into the arrays."""
    n = len(idx)
    K = model.num_components
    J = v.shape[1]
    ut = torch.from_numpy(np.ascontiguousarray(u))
    vf = torch.from_numpy(v.astype(np.float64))
    pn = torch.arange(n).repeat_interleave(K)
    pk = torch.arange(K).repeat(n)

    def gather(pn: torch.Tensor, pk: torch.Tensor) -> list[torch.Tensor]:
        return [ut[pn, :J], ut[pn, J : 2 * J], vf[pn], model._ex[pk], model._ey[pk],
                model._ez[pk], model._mux[pk], model._muy[pk], model._muz[pk],
                model._rho[pk], model._lam[pk]]

    fit = solve.fit_pairs(*gather(pn, pk), model._sin, model._cos)
    c, r, a, rs = (x.numpy().copy() for x in (fit.coeffs, fit.residual, fit.angle,
                                               fit.residuals))
    cp = c[:, 0] > SCALE_CAP
    if cp.any():
        sel = np.flatnonzero(cp)
        st = torch.from_numpy(sel)
        cf = solve.fit_pairs(*gather(pn[st], pk[st]), model._sin, model._cos,
                             cap=SCALE_CAP, release_exact=release_exact)
        c[sel], r[sel], a[sel], rs[sel] = (x.numpy() for x in (cf.coeffs, cf.residual,
                                                               cf.angle, cf.residuals))
    _store(idx, (c, r, a, cp, rs), (coeffs, res, ang, capped, allres))


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


_SLOTS: tuple[np.ndarray, np.ndarray] | None = None
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
        obs, _ = _slots()
        J = len(obs)
        kb = solve.BLEND_WEIGHT / (1.0 + solve.BLEND_WEIGHT)
        sk = np.zeros((J, 51))
        af = np.zeros((2 * J, 51))
        img = np.zeros((51, 34 + 2 * J))
        for jt in range(17):
            img[jt, 2 * jt] = 1.0
            img[34 + jt, 2 * jt + 1] = -1.0
        for i, slot in enumerate(obs):
            sk[i, slot] = sk[i, 34 + slot] = kb
            af[i, slot] = -kb
            af[J + i, 34 + slot] = kb
            img[slot, 34 + i] = 1.0
            img[34 + slot, 34 + J + i] = -1.0
        from poseviewer.lifting.model import _bone_matrix

        img_y = np.zeros(34 + 2 * J)
        img_y[1:34:2] = 1.0
        img_y[34 + J :] = 1.0
        depth = np.zeros((51, 34 + 2 * J))
        for jt in range(17):
            depth[17 + jt, 2 * jt + 1] = -1.0
        bx, by, bz = (np.zeros((J, 51)) for _ in range(3))
        for i, slot in enumerate(obs):
            depth[17 + slot, 34 + J + i] = -1.0
            bx[i, slot] = kb
            by[i, 17 + slot] = -kb
            bz[i, 34 + slot] = -kb
        _MAPS = _BlendMaps(sk, np.ones(J) @ sk - 1.0, af, img,
                           np.kron(np.eye(3), _bone_matrix()), img_y, depth, bx, by, bz)
    return _MAPS


def _slots() -> tuple[np.ndarray, np.ndarray]:
    """``model.OBS_SLOTS, OBS_SOURCES`` (imported once: the model module imports this one)."""
    global _SLOTS
    if _SLOTS is None:
        from poseviewer.lifting.model import OBS_SLOTS, OBS_SOURCES

        _SLOTS = (OBS_SLOTS, OBS_SOURCES)
    return _SLOTS


#: people x components up to which the poses of step 5.1 come from one gathered product
#: with the precomputed rotated basis (faster for small batches); larger batches rotate
#: in place (``model_pose``: less memory)
GATHER_MAX = 96


def lift(model: PoseModel3D, j: np.ndarray, vis: np.ndarray, inter: bool,
         release_exact: bool, as_numpy: bool = False
         ) -> LiftResult | tuple[LiftResult, dict[str, torch.Tensor]]:
    """The whole lifting on the CPU (see the module docstring); same results as
    ``PoseModel3D._lift``. ``as_numpy``: the result holds numpy arrays (no torch)."""
    OBS_SLOTS, OBS_SOURCES = _slots()
    n_people = j.shape[0]
    np_ = model._np
    u, v, lifted, centre, m, all_vis = normalise(j, vis, OBS_SOURCES, np_["xy_index"],
                                                 solve.MIN_VISIBLE)
    grid = model.elevation_grid(release_exact)
    eidx, tz = None, np.zeros((n_people, model.num_components))
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
    score = np_["lgdet"] * s2
    if eidx is not None:  # the size term x cos e (see solve.ELEVATION_SPIKE)
        score *= np.cos(grid[0][eidx])
    score += residual
    best = score.argmin(1)
    all_lifted = all_vis or bool(lifted.all())
    if not all_lifted:
        best[~lifted] = 0
    # Step 5 for every component, rows (x, y, z) of X = U^T (mu + sum c E) (-|s|), (N, K, 51).
    if n_people * K <= GATHER_MAX:
        rec_model = (coeffs[:, :, None, :] @ np_["mrot"].take(ang + np_["koff"], axis=0))[
            :, :, 0]
        if scale.size and scale.max() >= 0:  # else -|s| = s for every fitted (capped) scale
            rec_model *= -np.sign(scale)[..., None]
    else:
        rec_model = model_pose(np_, scale, ang, coeffs[..., 1:] / coeffs[..., :1]).reshape(
            n_people, K, 51)
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
        a, i = model.observed_arrays()["head_top"]
        if a:  # the head slot shows, and is compared as, LSP's head top
            h, nk, i = 2 * OBS_SLOTS[int(i)], 2 * solve_neck(), int(i)
            top = (1.0 + a) * proj[..., h : h + 2] - a * proj[..., nk : nk + 2]
            proj[..., h : h + 2] = top
            proj[..., 34 + i] = top[..., 0]
            proj[..., 34 + J2 // 2 + i] = top[..., 1]
    joints_img = proj[..., :34].reshape(n_people, K, 17, 2) * m[:, None, None, None]
    joints_img += centre[:, None, None, :]
    # blend with the observation on the visible joints: X = -(C^T Y); per coordinate
    # rec_blend = rec_model * sk + af (x: -(x keep + w_x kb), y: -y, z: -z keep + w_y kb)
    vf = None if all_vis else v.astype(np.float64)
    if eidx is not None:  # along the tilted image plane: -X + kb (proj - w) (visible)
        d = proj[..., 34:] - u[:, None, :J2]  # (N, K, 28)
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
    g = solve.OUTPUT_SIZE / np.sqrt(size2)
    pose = (rec_blend * g[..., None]).reshape(n_people, K, 3, 17)
    if grid is not None:  # a tilted camera's vertical shift is a depth translation: the
        # depth origin is put at the joint centroid (the pose's shape is unchanged)
        pose[:, :, 1] -= pose[:, :, 1].mean(-1, keepdims=True)
    pose_3d = pose.swapaxes(-1, -2)
    # the noise from the fit's own residual: its projection against the visible joints
    if eidx is None:
        d = proj[..., 34:] - u[:, None, :J2]  # (N, K, 28)
        if vf is not None:
            d *= np.concatenate([vf, vf], 1)[:, None, :]
    rss = (d[..., None, :] @ d[..., :, None])[..., 0, 0]
    # joint_cov x the t factor x cov_scale x (scale x size factor)^2 x the noise ratio
    # (``solve.fit_noise_terms``)
    jf = rss * qd[..., 0]
    np.maximum(jf, s2, out=jf)
    cs = model.cov_scale if grid is None else model.cov_scale * solve.ELEVATION_COV_FACTOR
    jf *= (solve.OUTPUT_SIZE**2 * cs) / size2  # x g^2 x cov_scale
    jcov = cov_t * jf[..., None, None, None]
    dof = qd[..., 1]
    theta = np_["theta"].take(ang)
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

    t = _as_is if as_numpy else torch.from_numpy
    pose_3d, joints_img, jcov, dof = mask(pose_3d), mask(joints_img), mask(jcov), mask(dof)
    comps = ComponentFits(
        pose_3d=t(pose_3d), score=t(mask(score)), residual=t(mask(residual)),
        scale=t(mask(scale)), yaw=t(mask(theta)), coeffs=t(mask(c)),
        joints_2d=t(joints_img), joint_cov=t(jcov), joint_cov_dof=t(dof),
        elevation=t(mask(elev)), shift=t(mask(tz)))
    if n_people == 1:  # a copy of the best component (basic indexing: cheaper)
        b = int(best[0])

        def pick(x: np.ndarray) -> np.ndarray:
            return x[:, b].copy()
    else:
        ar = np.arange(n_people)

        def pick(x: np.ndarray) -> np.ndarray:
            return x[ar, best]
    result = LiftResult(
        pose_3d=t(pick(pose_3d)), component=t(best), lifted=t(lifted),
        joints_2d=t(pick(joints_img)), components=comps,
        centre=t(mask(centre)), norm=t(mask(m)), joint_cov=t(pick(jcov)),
        joint_cov_dof=t(pick(dof)), elevation=t(pick(mask(elev))))
    if not inter:
        return result
    t = torch.from_numpy
    w17 = np.zeros((n_people, 2, 17))
    w17[:, :, OBS_SLOTS] = u[:, :J2].reshape(n_people, 2, J2 // 2)
    v17 = np.zeros((n_people, 17), dtype=bool)
    v17[:, OBS_SLOTS] = v
    rec_model = rec_model.reshape(n_people, K, 3, 17)
    rec_blend = rec_blend.reshape(n_people, K, 3, 17)
    rec_renorm = rec_blend * (0.97 / np.sqrt(size2))[..., None, None]
    extra = {
        "transformed_xy": t(j[:, OBS_SOURCES, :]), "weights": t(v17 & lifted[:, None]),
        "norm_pose": t(mask(w17)), "m": t(mask(m)), "centre": t(mask(centre)),
        "residuals": t(mask(allres)), "angle": t(ang),
        "sincos": t(mask(np.stack([np.sin(theta), np.cos(theta)], -1))),
        "rec_model": t(mask(rec_model)), "rec_blend": t(mask(rec_blend)),
        "rec_renorm": t(mask(rec_renorm)), "pose_3d": t(mask(pose)), "capped": t(capped),
        "elevation": t(mask(elev)),
    }
    return result, extra


def solve_neck() -> int:
    """The H36M neck/nose joint (below the head)."""
    from poseviewer.lifting.model import NECK_SLOT

    return int(NECK_SLOT)


def _as_is(x: np.ndarray) -> np.ndarray:
    return x


def model_pose(np_: dict[str, np.ndarray], scale: np.ndarray, ang: np.ndarray,
               c: np.ndarray) -> np.ndarray:
    """Step 5.1 in numpy: X = U(theta)^T (mu + sum c_i E_i) (-|s|), (N, K, 3, 17), for
    the angle indices ``ang`` (N, K)."""
    n, k = scale.shape
    ext = np_["ext"]  # (K, 3 + B, 51)
    x0 = np_["mu"][None] + (c[:, :, None, :] @ ext[None])[:, :, 0].reshape(n, k, 3, 17)
    s, co = np_["sin"][ang][..., None], np_["cos"][ang][..., None]
    a = -np.abs(scale)[..., None]
    out = np.empty_like(x0)
    out[:, :, 0] = (s * x0[:, :, 0] + co * x0[:, :, 1]) * a
    out[:, :, 1] = (-co * x0[:, :, 0] + s * x0[:, :, 1]) * a
    out[:, :, 2] = x0[:, :, 2] * a
    return out
