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
from typing import TYPE_CHECKING

import numpy as np
import torch

from poseviewer.lifting import operators, solve
from poseviewer.lifting.result import ComponentFits, LiftResult

if TYPE_CHECKING:
    from poseviewer.lifting.model import PoseModel3D

_BITS = 1 << np.arange(14, dtype=np.int64)


def pattern_key(mask: np.ndarray) -> np.ndarray:
    """Integer key of each visibility row (..., 14) bool (observed-slot order)."""
    return mask.astype(np.int64) @ _BITS[: mask.shape[-1]]


def fit_groups(model: PoseModel3D, wn: np.ndarray, v: np.ndarray, release_exact: bool,
               keep_all: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                        np.ndarray | None, np.ndarray, np.ndarray]:
    """Steps 2 and 3 for every person and component.

    ``wn`` (N, 14, 2) normalised joints (zero where invisible), ``v`` (N, 14) bool.
    Returns coefficients a (N, K, 4 + B) (a_0 = scale, not divided), the residual at the
    chosen angle (N, K) (not halved), the angle index (N, K), capped (N, K), all residuals
    (N, K, A) when ``keep_all``, the joint covariances (N, K, 17, 3, 3) in normalised
    units and the effective numbers of fitted parameters (N, K) (``operators.joint_cov``).
    """
    n, J = v.shape
    u = np.empty((n, 2 * J + 1))
    u[:, :J] = wn[..., 0]
    u[:, J : 2 * J] = wn[..., 1]
    u[:, 2 * J] = 1.0
    keys = pattern_key(v)
    if n == 1 or (n > 1 and (keys == keys[0]).all()):  # one pattern: no scatter
        ops = _prepared(model, int(keys[0]), n, v[0])
        if ops is not None:
            return _fit_prepared(model, ops, u, release_exact, keep_all)
        groups = [(int(keys[0]), np.arange(n))]
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
    cov = np.empty((n, K, 17, 3, 3))
    fitted = np.empty((n, K))
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
        cov[idx], fitted[idx] = got[5], got[6]
    if direct:  # every unprepared pattern in one batched direct solve
        idx = np.concatenate(direct) if len(direct) > 1 else direct[0]
        if len(idx) * K <= solve.NUMPY_MAX_PAIRS:
            with model.torch_threads():  # the covariances' triangular solve is torch's
                _direct_np(model, wn[idx], v[idx], release_exact, idx, coeffs, res, ang,
                           capped, allres, cov, fitted)
        else:
            with model.torch_threads():
                _direct(model, wn[idx], v[idx], release_exact, idx, coeffs, res, ang,
                        capped, allres)
                pk = np.tile(kr, len(idx))
                vis = torch.from_numpy(np.repeat(v[idx], K, axis=0))
                got_cov, got_fit = operators.joint_cov(
                    model._ex, model._ey, model._ez, model.e, model._rho, model._lam,
                    model._sin, model._cos, vis, model._obs, torch.from_numpy(pk),
                    torch.from_numpy(ang[idx].reshape(-1)), fitted=True)
                cov[idx] = got_cov.numpy().reshape(len(idx), K, 17, 3, 3)
                fitted[idx] = got_fit.numpy().reshape(len(idx), K)
    return coeffs, res, ang, capped, allres, cov, fitted


def _direct_np(model: PoseModel3D, wn: np.ndarray, v: np.ndarray, release_exact: bool,
               idx: np.ndarray, coeffs: np.ndarray, res: np.ndarray, ang: np.ndarray,
               capped: np.ndarray, allres: np.ndarray | None, cov: np.ndarray,
               fitted: np.ndarray) -> None:
    """``_direct`` and the covariances for a few people (n K <= ``solve.NUMPY_MAX_PAIRS``
    pairs): the numpy solvers called straight on the model's numpy arrays."""
    n = len(idx)
    d = model._np
    K = d["lam"].shape[0]
    pn = np.repeat(np.arange(n), K)
    pk = np.tile(np.arange(K), n)
    vf = v.astype(np.float64)

    def per_pair(pn: np.ndarray, pk: np.ndarray) -> list[np.ndarray]:
        return [wn[pn, :, 0], wn[pn, :, 1], vf[pn], d["ex"][pk], d["ey"][pk], d["ez"][pk],
                d["mux"][pk], d["muy"][pk], d["muz"][pk], d["rho"][pk], d["lam"][pk]]

    rs, a, r, c = solve._fit_pairs_np(*per_pair(pn, pk), d["sin"], d["cos"])
    cp = c[:, 0] > solve.SCALE_CAP
    if cp.any():
        sel = np.flatnonzero(cp)
        rs[sel], a[sel], r[sel], c[sel] = solve._fit_pairs_np(
            *per_pair(pn[sel], pk[sel]), d["sin"], d["cos"], cap=solve.SCALE_CAP,
            release_exact=release_exact)
    _store(idx, (c, r, a, cp, rs), (coeffs, res, ang, capped, allres))
    got_cov, got_fit = operators._joint_cov_np(
        d["ex"], d["ey"], d["ez"], d["e"], d["rho"], d["lam"], d["sin"], d["cos"],
        v[pn], d["obs"], pk, a, fitted=True)
    cov[idx] = got_cov.reshape(n, K, 17, 3, 3)
    fitted[idx] = got_fit.reshape(n, K)


def _prepared(model: PoseModel3D, key: int, people: int, mask: np.ndarray
              ) -> operators.PatternOps | None:
    """The cached operators of pattern ``key``, prepared now once ``model.build_min``
    people have met it; None: solve directly."""
    cache = model.pattern_cache
    ops = cache.get(key)
    if ops is None and cache.count(key, people) >= model.build_min:
        with model.torch_threads():
            ops = operators.build(model._ex, model._ey, model._ez, model._mux,
                                  model._muy, model._muz, model._rho, model._lam,
                                  model._sin, model._cos, mask)
        cache.put(key, ops)
    return ops


def _fit_prepared(model: PoseModel3D, ops: operators.PatternOps, ug: np.ndarray,
                  release_exact: bool, keep_all: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                             np.ndarray | None, np.ndarray, np.ndarray]:
    """``fit_groups``'s outputs for people ``ug`` (n, 29) sharing the pattern of ``ops``."""
    n = len(ug)
    K, A = ops.coef.shape[:2]
    kr = np.arange(K)
    feats = ug[:, ops.full_i] * ug[:, ops.full_j]
    if n >= 64:  # torch's GEMM on lift's thread count (numpy's BLAS has its own pool)
        with model.torch_threads():
            r = torch.from_numpy(feats).mm(ops.res_packed_t).numpy()
    else:
        r = feats @ ops.res_packed
    r = r.reshape(n, K, A)
    best = r.argmin(-1)  # (n, K), first minimum on ties
    rb = r.min(-1)  # the residual there
    a = (ops.coef[kr, best] @ ug[:, None, :, None])[..., 0]  # (n, K, nb)
    cp = a[..., 0] > solve.SCALE_CAP
    if cp.any():
        got = ops.capped.get(release_exact)
        if got is None:
            with model.torch_threads():
                got = operators.capped_ops(ops, model._lam, model._sin, model._cos,
                                           release_exact)
        rc, cc = got
        for i, k in zip(*np.nonzero(cp), strict=True):
            uu = ug[i]
            rr = (rc[k] @ uu) @ uu  # (A,)
            j = int(rr.argmin())
            r[i, k] = rr
            best[i, k] = j
            rb[i, k] = rr[j]
            a[i, k] = cc[k, j] @ uu
    cov, fitted = ops.joint_cov_flat(model, best + kr * A)
    return a, rb, best, cp, (r if keep_all else None), cov, fitted


def _direct(model: PoseModel3D, wn: np.ndarray, v: np.ndarray, release_exact: bool,
            idx: np.ndarray, coeffs: np.ndarray, res: np.ndarray, ang: np.ndarray,
            capped: np.ndarray, allres: np.ndarray | None) -> None:
    """Steps 2-3 for one group with ``solve.fit_pairs`` (no operators), into the arrays."""
    n = len(idx)
    K = model.num_components
    wt = torch.from_numpy(np.ascontiguousarray(wn))
    vf = torch.from_numpy(v.astype(np.float64))
    pn = torch.arange(n).repeat_interleave(K)
    pk = torch.arange(K).repeat(n)

    def gather(pn: torch.Tensor, pk: torch.Tensor) -> list[torch.Tensor]:
        return [wt[pn, :, 0], wt[pn, :, 1], vf[pn], model._ex[pk], model._ey[pk],
                model._ez[pk], model._mux[pk], model._muy[pk], model._muz[pk],
                model._rho[pk], model._lam[pk]]

    fit = solve.fit_pairs(*gather(pn, pk), model._sin, model._cos)
    c, r, a, rs = (x.numpy().copy() for x in (fit.coeffs, fit.residual, fit.angle,
                                               fit.residuals))
    cp = c[:, 0] > solve.SCALE_CAP
    if cp.any():
        sel = np.flatnonzero(cp)
        st = torch.from_numpy(sel)
        cf = solve.fit_pairs(*gather(pn[st], pk[st]), model._sin, model._cos,
                             cap=solve.SCALE_CAP, release_exact=release_exact)
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


def normalise(j: np.ndarray, vis: np.ndarray, obs_src: np.ndarray, min_visible: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                         np.ndarray]:
    """Step 1 per person: (wn (N,14,2), v (N,14), lifted (N,), centre (N,2), m (N,), w)."""
    w = j[:, obs_src, :]
    v = vis[:, obs_src]
    y = w[..., 1]
    if v.all():  # every joint visible (the common case): no masks; the same arithmetic
        ymax, ymin = y.max(-1), y.min(-1)
        lifted = ymax > ymin  # (14 >= min_visible joints)
        if lifted.all():
            centre = w.sum(1) / float(v.shape[1])
            m = (ymin - ymax) * 0.5
            wn = (w - centre[:, None, :]) * (1.0 / m)[:, None, None]
            return wn, v, lifted, centre, m, w
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
    wn = (w - centre[:, None, :]) * (vf / m[:, None])[..., None]
    return wn, v, lifted, centre, m, w


_SLOTS: tuple[np.ndarray, np.ndarray] | None = None
_BLEND: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def _blend_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constant matrices of step 5's blend and the residual (rows x, y, z of 17 joints,
    flattened to 51; the observed slots' normalised joints flattened x then y to 28):
    ``sk_map`` (14, 51) with visibility v: v @ sk_map - 1 = the factor on the model pose
    (-1, or kb - 1 on the visible joints' x and z rows); ``af_map`` (28, 51): w @ af_map =
    the observation's share (-kb w_x on x, kb w_y on z); ``obs_map`` (51, 28): the model
    pose's normalised image coordinates (x, -z) at the observed slots, to compare with the
    observation (w_x, w_y)."""
    global _BLEND
    if _BLEND is None:
        obs, _ = _slots()
        J = len(obs)
        kb = solve.BLEND_WEIGHT / (1.0 + solve.BLEND_WEIGHT)
        sk = np.zeros((J, 51))
        af = np.zeros((2 * J, 51))
        om = np.zeros((51, 2 * J))
        for i, slot in enumerate(obs):
            sk[i, slot] = sk[i, 34 + slot] = kb
            af[i, slot] = -kb
            af[J + i, 34 + slot] = kb
            om[slot, i] = 1.0
            om[34 + slot, J + i] = -1.0
        _BLEND = (sk, af, om)
    return _BLEND


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
         release_exact: bool) -> LiftResult | tuple[LiftResult, dict[str, torch.Tensor]]:
    """The whole lifting on the CPU (see the module docstring); same results as
    ``PoseModel3D._lift``."""
    OBS_SLOTS, OBS_SOURCES = _slots()
    n_people = j.shape[0]
    wn, v, lifted, centre, m, _ = normalise(j, vis, OBS_SOURCES, solve.MIN_VISIBLE)
    coeffs, res, ang, capped, allres, cov, fitted = fit_groups(model, wn, v, release_exact,
                                                               inter)
    np_ = model._np
    K = coeffs.shape[1]
    # Step 3 (end) and 4.
    scale = coeffs[..., 0]
    residual = res * 0.5
    score = residual + np_["lgdet"] * (scale * scale)
    best = score.argmin(1)
    all_lifted = bool(lifted.all())
    if not all_lifted:
        best[~lifted] = 0
    # Step 5 for every component, rows (x, y, z) of X = U^T (mu + sum c E) (-|s|).
    if n_people * K <= GATHER_MAX:
        rec_model = (coeffs[:, :, None, :] @ np_["mrot"][np.arange(K), ang])[:, :, 0]
        if not (scale < 0).all():  # -|s| = s for every fitted (capped) scale
            rec_model *= -np.sign(scale)[..., None]
        rec_model = rec_model.reshape(n_people, K, 3, 17)
    else:
        rec_model = model_pose(np_, scale, ang, coeffs[..., 1:] / coeffs[..., :1])
    # projection (first two rows of C X) = (X_x, -X_z), normalised
    px, pz = rec_model[:, :, 0], rec_model[:, :, 2]
    joints_img = np.empty(px.shape + (2,))
    mm = m[:, None, None]
    joints_img[..., 0] = px * mm + centre[:, None, None, 0]
    joints_img[..., 1] = centre[:, None, None, 1] - pz * mm
    # blend with the observation on the visible joints: X = -(C^T Y); per coordinate
    # rec_blend = rec_model * sk + af (x: -(x keep + w_x kb), y: -y, z: -z keep + w_y kb)
    # (sk and af from constant scatter matrices, ``_blend_maps``: exact, fewer operations)
    sk_map, af_map, obs_map = _blend_maps()
    vf = v.astype(np.float64)
    wflat = wn.swapaxes(1, 2).reshape(n_people, 1, 2 * wn.shape[1])  # (N, 1, 28): x, y
    sk = (vf @ sk_map - 1.0).reshape(n_people, 1, 3, 17)
    af = (wflat @ af_map).reshape(n_people, 1, 3, 17)
    rec_blend = rec_model * sk + af
    bones = rec_blend @ np_["bone_matrix"]  # (N, K, 3, 16)
    size = np.sqrt((bones * bones).sum((-1, -2)))  # (N, K)
    g = solve.OUTPUT_SIZE / size
    pose = rec_blend * g[..., None, None]  # (N, K, 3, 17)
    pose_3d = pose.swapaxes(-1, -2)
    # model millimetres -> output millimetres: x scale (mm -> normalised) x size factor
    f = g * scale  # (N, K)
    # the noise from the fit's own residual: its projection (x, -z: the image's x, y)
    # against the visible joints
    d = rec_model.reshape(n_people, K, 51) @ obs_map - wflat  # (N, K, 28)
    d *= d
    rss = (d @ np.concatenate([vf, vf], 1)[:, :, None])[..., 0]  # (N, K)
    noise, dof = solve.fit_noise(rss, 2.0 * vf.sum(-1)[:, None], fitted, np_["lam"], scale)
    jcov = cov * (model.cov_scale * f * f * noise)[..., None, None, None]
    theta = np_["theta"][ang]
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

    t = torch.from_numpy
    pose_3d, joints_img, jcov, dof = mask(pose_3d), mask(joints_img), mask(jcov), mask(dof)
    comps = ComponentFits(
        pose_3d=t(pose_3d), score=t(mask(score)), residual=t(mask(residual)),
        scale=t(mask(scale)), yaw=t(mask(theta)), coeffs=t(mask(c)),
        joints_2d=t(joints_img), joint_cov=t(jcov), joint_cov_dof=t(dof))
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
        joint_cov_dof=t(pick(dof)))
    if not inter:
        return result
    w17 = np.zeros((n_people, 2, 17))
    w17[:, :, OBS_SLOTS] = wn.swapaxes(1, 2)
    v17 = np.zeros((n_people, 17), dtype=bool)
    v17[:, OBS_SLOTS] = v
    rec_renorm = rec_blend * (0.97 / size)[..., None, None]
    extra = {
        "transformed_xy": t(j[:, OBS_SOURCES, :]), "weights": t(v17 & lifted[:, None]),
        "norm_pose": t(mask(w17)), "m": t(mask(m)), "centre": t(mask(centre)),
        "residuals": t(mask(allres)), "angle": t(ang),
        "sincos": t(mask(np.stack([np.sin(theta), np.cos(theta)], -1))),
        "rec_model": t(mask(rec_model)), "rec_blend": t(mask(rec_blend)),
        "rec_renorm": t(mask(rec_renorm)), "pose_3d": t(mask(pose)), "capped": t(capped),
    }
    return result, extra


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
