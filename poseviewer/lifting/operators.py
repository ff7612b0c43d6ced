"""Per-visibility-pattern solution operators of the lifting (the fast path of ``lift``).

For one visibility pattern (which of the 14 observed joints are visible), the least-squares
problem of spec step 2 depends only on the model, the component, the angle and the
pattern; the normalised 2D joints enter only its right-hand side. So for a pattern we
prepare, once, for every component k and angle j (K x 100 of them), as functions of

    u = [w_x (14), w_y (14), 1]    (observed slots, zero where invisible)

- the residual ``r_kj(u) = u^T R_kj u`` (a 29 x 29 quadratic form; the full release
  residual, the constant 0.003^2 included) and
- the solution ``a_kj(u) = C_kj u`` (a_0 .. a_{3+B}, a (4 + B) x 29 matrix),

and, on first need, the same two for the capped refit of step 3 (both modes). Lifting a
batch is then: one matrix product for all residuals, an argmin over the angles, one
small matrix-vector product per person and component. The operators are derived with
exactly the maths of ``solve`` (the translation directions eliminated analytically, the
basis coefficients in the dual, the image-y block once per component, a 14 x 14 SPD
system per angle), now with the 29 columns of u as right-hand sides.

The posterior covariance of the basis coefficients given the angle and the scale does
not depend on the 2D joints either; ``joint_cov`` of a pattern gives, per component and
angle, the 3 x 3 covariance of every joint of the (blended, centred) pose in the
lifting's normalised units; ``lift`` scales it to mm^2.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from poseviewer.lifting import solve
from poseviewer.result import SCALE_CAP


@dataclass
class PatternOps:
    """The operators of one visibility pattern (all components, all angles)."""

    mask: np.ndarray  #: (J,) bool, observed-slot order
    active: np.ndarray  #: indices of u that can be non-zero (visible x, visible y, 1)
    pair_i: np.ndarray  #: (P,) with pair_j: the upper triangle over ``active``
    pair_j: np.ndarray
    full_i: np.ndarray  #: ``active[pair_i]``, ``active[pair_j]``: the pairs as indices of u
    full_j: np.ndarray
    res_packed: np.ndarray  #: (P, K * A): r = (u_i u_j over the pairs) @ res_packed
    res_packed_t: Tensor  #: the same memory as a torch tensor
    coef: np.ndarray  #: (K, A, 4 + B, 29) a_0 .. a_{3+B} as linear maps of u
    # what the capped refit and the covariance are derived from (torch, float64)
    q: Tensor  #: (K, A, 31, 31) quadratic form over [u, -a_0, -tau] (divided by lam^2)
    w: Tensor  #: (K, A, B, 31) R~ Dx^T S^-1 [G h t]
    bg: Tensor  #: (K, B, 29) posterior mean of the basis given image y, as a map of u
    bh: Tensor  #: (K, B)
    kappa: Tensor  #: (K, A)
    dxrt: Tensor  #: (K, A, J, B) Dx R~
    s_inv: Tensor  #: (K, A, J, J) S^-1
    rt: Tensor  #: (K, B, B) posterior covariance of the basis given image y
    capped: dict[bool, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: the elevated operators (``elevation.ElevOps``) of the current grid, on first need
    elev: dict[Any, Any] = field(default_factory=dict)
    koff: np.ndarray = field(init=False)  #: arange(K) x A: flat (component, angle) offsets
    coef_flat: np.ndarray = field(init=False)  #: ``coef`` as (K * A, 4 + B, 29) (a view)
    noise: NoiseTerms = field(init=False)  #: the joint covariances' terms, on first need

    def __post_init__(self) -> None:
        K, A = self.coef.shape[:2]
        self.koff = np.arange(K) * A
        self.coef_flat = self.coef.reshape((K * A,) + self.coef.shape[2:])
        self.noise = NoiseTerms(self.mask, K, A)

    @property
    def nbytes(self) -> int:
        """Memory held (bytes)."""
        n = self.res_packed.nbytes + self.coef.nbytes + self.noise.nbytes
        n += sum(t.numel() * 8 for t in (self.q, self.w, self.dxrt, self.s_inv))
        n += sum(a.nbytes + b.nbytes for a, b in self.capped.values())
        n += sum(e.nbytes for e in self.elev.values())
        return n


class NoiseTerms:
    """``solve.fit_noise_terms`` of ``joint_cov`` for one visibility pattern, per
    (component, angle), computed on first need and kept (the covariances do not depend on
    the 2D joints)."""

    def __init__(self, mask: np.ndarray, K: int, A: int) -> None:
        self.mask = np.asarray(mask, dtype=bool)
        self.A = A
        self.cov_t = np.zeros((K * A, 17, 3, 3))  #: joint_cov x dof / (dof - 2)
        self.qd = np.zeros((K * A, 2))  #: (lambda_d^2 / dof, dof); dof 0: not yet filled

    @property
    def nbytes(self) -> int:
        """Memory held (bytes)."""
        return self.cov_t.nbytes + self.qd.nbytes

    def get(self, model: Any, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cov_t (..., 17, 3, 3) in normalised units, (lambda_d^2 / dof, dof) (..., 2)) for
        flat indices ``component * A + angle`` (any shape)."""
        qd = self.qd.take(flat, axis=0)
        if not qd.min() > 0.0:  # q and dof > 0 once filled
            A = self.A
            todo = np.unique(flat[qd[..., 1] == 0])
            pk, pa = torch.from_numpy(todo // A), torch.from_numpy(todo % A)
            vis = torch.from_numpy(np.repeat(self.mask[None], len(todo), axis=0))
            with model.torch_threads():
                cov, fitted = joint_cov(model._ex, model._ey, model._ez, model.e, model._rho,
                                        model._lam, model._sin, model._cos, vis, model._obs,
                                        pk, pa, fitted=True)
            lam = model._np["lam"][todo // A]
            self.cov_t[todo], self.qd[todo] = solve.fit_noise_terms(
                cov.numpy(), fitted.numpy(), 2.0 * float(self.mask.sum()), lam)
            qd = self.qd.take(flat, axis=0)
        return self.cov_t.take(flat, axis=0), qd


def build(ex: Tensor, ey: Tensor, ez: Tensor, mux: Tensor, muy: Tensor, muz: Tensor,
          rho: Tensor, lam: Tensor, sin: Tensor, cos: Tensor, mask: np.ndarray) -> PatternOps:
    """Prepare the operators of visibility ``mask`` (J,) for every component and angle.

    ``ex, ey, ez`` (K, J, B) basis rows at the observed joints, ``mux, muy, muz`` (K, J),
    ``rho`` (K, B), ``lam`` (K,), ``sin, cos`` (A,) as in ``solve.fit_pairs``.
    """
    K, J, B = ex.shape
    A = sin.shape[0]
    dt, dev = ex.dtype, ex.device
    nu = 2 * J + 1
    v = torch.as_tensor(mask, dtype=dt, device=dev)
    exv, eyv, ezv = ex * v[:, None], ey * v[:, None], ez * v[:, None]
    # image-y block, once per component (as in solve.fit_pairs, right-hand sides = u)
    rt = torch.cholesky_inverse(torch.linalg.cholesky(torch.diag_embed(rho) + ezv.mT @ ezv))
    dg = torch.zeros(K, B, nu, dtype=dt, device=dev)
    dg[:, :, J : 2 * J] = -ezv.mT  # D_y^T g_y, g_y = v w_y
    bg = rt @ dg
    hy = -muz * v
    dh = -(ezv.mT @ hy[..., None])[..., 0]
    bh = (rt @ dh[..., None])[..., 0]
    ygg = torch.zeros(K, nu, nu, dtype=dt, device=dev)
    ygg[:, J : 2 * J, J : 2 * J] = torch.diag(v)
    ygg = ygg - dg.mT @ bg
    ygh = torch.zeros(K, nu, dtype=dt, device=dev)
    ygh[:, J : 2 * J] = hy
    ygh = ygh - (dg.mT @ bh[..., None])[..., 0]
    yhh = (hy * hy).sum(-1) - (dh * bh).sum(-1)
    # per angle: x block
    s = sin[None, :, None, None]
    c = cos[None, :, None, None]
    # Dx = s Ex + c Ey: every product with Dx is a trig combination of two per-component ones
    exrt, eyrt = exv @ rt, eyv @ rt
    dxrt = s * exrt[:, None] + c * eyrt[:, None]  # (K, A, J, B)
    mxx, myy = exrt @ exv.mT, eyrt @ eyv.mT
    mxy = exrt @ eyv.mT
    smat = (s * s) * mxx[:, None] + (s * c) * (mxy + mxy.mT)[:, None] + (c * c) * myy[:, None]
    smat.diagonal(dim1=-2, dim2=-1).add_(1.0)  # S = I + Dx R~ Dx^T >= I
    f = torch.zeros(K, A, J, nu + 2, dtype=dt, device=dev)
    f[..., :nu] = -(s * (exv @ bg)[:, None] + c * (eyv @ bg)[:, None])
    ar = torch.arange(J, device=dev)
    f[..., ar, ar] += v
    hx = (s[..., 0] * (v * mux - (exv @ bh[..., None])[..., 0])[:, None]
          + c[..., 0] * (v * muy - (eyv @ bh[..., None])[..., 0])[:, None])
    f[..., nu] = hx
    f[..., nu + 1] = v
    s_inv = torch.cholesky_inverse(torch.linalg.cholesky(smat))
    z = s_inv @ f
    q = f.mT @ z  # (K, A, nu + 2, nu + 2)
    q[..., :nu, :nu] += ygg[:, None]
    q[..., :nu, nu] += ygh[:, None]
    q[..., nu, :nu] += ygh[:, None]
    q[..., nu, nu] += yhh[:, None]
    w = dxrt.mT @ z  # (K, A, B, nu + 2)
    kappa = solve.TRANSLATION_PRIOR / (1.0 + sin * sin)[None, :] / (lam * lam)[:, None]

    # uncapped: minimise over p = (a_0, tau): [[thh, tht], [tht, ttt + kappa]] p = q_pu u
    thh, tht, ttt = q[..., nu, nu], q[..., nu, nu + 1], q[..., nu + 1, nu + 1]
    d = ttt + kappa
    det = thh * d - tht * tht
    qh, qt = q[..., :nu, nu], q[..., :nu, nu + 1]  # (K, A, nu)
    a0 = (qh * d[..., None] - qt * tht[..., None]) / det[..., None]
    tau = (thh[..., None] * qt - tht[..., None] * qh) / det[..., None]
    pmap = torch.stack([a0, tau], dim=-2)  # (K, A, 2, nu)
    res = torch.baddbmm(q[..., :nu, :nu].reshape(K * A, nu, nu),
                        q[..., :nu, nu:].reshape(K * A, nu, 2), pmap.reshape(K * A, 2, nu),
                        beta=1.0, alpha=-1.0).view(K, A, nu, nu)
    res.mul_((lam * lam)[:, None, None, None])
    res[..., nu - 1, nu - 1] += solve.SCALE_PRIOR**2
    coef = _coefficients(a0, tau, torch.zeros_like(sin), sin, cos, bg, bh, w, None)
    mask = np.asarray(mask, dtype=bool).copy()
    active = np.flatnonzero(np.r_[mask, mask, True])
    pi, pj = np.triu_indices(len(active))
    ti, tj = torch.as_tensor(active[pi], device=dev), torch.as_tensor(active[pj], device=dev)
    # u^T R u = sum_i R_ii u_i^2 + sum_{i<j} (R_ij + R_ji) u_i u_j
    packed = res[..., ti, tj] + torch.where(ti == tj, 0.0, res[..., tj, ti])  # (K, A, P)
    return PatternOps(
        mask=mask, active=active, pair_i=pi, pair_j=pj, full_i=active[pi], full_j=active[pj],
        res_packed=(rp := np.ascontiguousarray(packed.reshape(K * A, -1).T.cpu().numpy())),
        res_packed_t=torch.from_numpy(rp),
        coef=np.ascontiguousarray(coef.cpu().numpy()), q=q, w=w, bg=bg, bh=bh,
        kappa=kappa, dxrt=dxrt, s_inv=s_inv, rt=rt)


def _coefficients(a0: Tensor, tau: Tensor, tau0: Tensor, sin: Tensor, cos: Tensor,
                  bg: Tensor, bh: Tensor, w: Tensor, quirk_offset: float | None) -> Tensor:
    """(K, A, 4 + B, nu): a_0, a_1, a_2, a_3, basis as maps of u, given the maps of a_0 and
    tau (K, A, nu) and tau0 (A,) (the constant column of u is the last)."""
    K, A, nu = a0.shape
    s, c = sin[None, :, None], cos[None, :, None]
    one = torch.zeros(nu, dtype=a0.dtype, device=a0.device)
    one[-1] = 1.0
    taup = tau - tau0[None, :, None] * one
    den = 1.0 + s * s
    a1 = taup * s / den
    a2 = taup * c / den
    a3 = a1.clone()
    if quirk_offset is not None:
        a1 = a1 + quirk_offset * one
    B = w.shape[2]
    lhs = w[..., nu:].clone()  # (K, A, B, 2): a_0 and tau columns
    lhs[..., 0] += bh[:, None]
    basis = torch.baddbmm((w[..., :nu] + bg[:, None]).reshape(K * A, B, nu),
                          lhs.reshape(K * A, B, 2),
                          torch.stack([a0, tau], dim=-2).reshape(K * A, 2, nu),
                          beta=1.0, alpha=-1.0).view(K, A, B, nu)
    return torch.cat([a0[:, :, None], a1[:, :, None], a2[:, :, None], a3[:, :, None], basis],
                     dim=2)


def capped_ops(ops: PatternOps, lam: Tensor, sin: Tensor, cos: Tensor, release_exact: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """(residual forms (K, A, 29, 29), coefficient maps (K, A, 4 + B, 29)) of the capped
    refit of step 3 (scale fixed at the cap), in the given mode; cached on ``ops``."""
    got = ops.capped.get(release_exact)
    if got is not None:
        return got
    q, kappa = ops.q, ops.kappa
    nu = q.shape[-1] - 2
    cap = SCALE_CAP
    if release_exact:
        tau0 = (solve.SCALE_PRIOR / math.sqrt(solve.TRANSLATION_PRIOR)) * sin
    else:
        tau0 = torch.zeros_like(sin)
    one = torch.zeros(nu, dtype=q.dtype, device=q.device)
    one[-1] = 1.0
    # z = [u, -cap * u_last, -tau]: fold a_0 = cap into the constant column
    lmat = torch.zeros(nu + 1, nu, dtype=q.dtype, device=q.device)
    lmat[:nu] = torch.eye(nu, dtype=q.dtype, device=q.device)
    lmat[nu, nu - 1] = -cap
    quu = lmat.T @ q[..., : nu + 1, : nu + 1] @ lmat
    qtu = (lmat.T @ q[..., : nu + 1, nu + 1 : nu + 2])[..., 0]  # (K, A, nu)
    lin = qtu + (kappa * tau0[None, :])[..., None] * one
    d = q[..., nu + 1, nu + 1] + kappa
    tau = lin / d[..., None]
    res = quu + (kappa * tau0[None, :] ** 2)[..., None, None] * (one[:, None] * one[None, :])
    res = res - lin[..., :, None] * tau[..., None, :]
    res = res * (lam * lam)[:, None, None, None]
    a0 = (cap * one).expand_as(tau)
    offset = solve.SCALE_PRIOR / math.sqrt(solve.TRANSLATION_PRIOR) if release_exact else None
    coef = _coefficients(a0, tau, tau0, sin, cos, ops.bg, ops.bh, ops.w, offset)
    out = (np.ascontiguousarray(res.cpu().numpy()), np.ascontiguousarray(coef.cpu().numpy()))
    ops.capped[release_exact] = out
    return out


#: Default memory budget of a model's pattern cache (bytes): with the elevation grid a
#: pattern's operators take about 20 MB (K = 3), the level ones alone about 8 MB.
CACHE_BUDGET = 300 * 1024 * 1024


class PatternCache:
    """A small LRU cache of ``PatternOps`` keyed by the visibility pattern (thread-safe),
    bounded by a number of patterns and by ``max_bytes`` (the least recently used are
    dropped first; the newest is always kept)."""

    def __init__(self, max_patterns: int = 16, max_bytes: int = CACHE_BUDGET) -> None:
        self.max_patterns = max_patterns
        self.max_bytes = max_bytes
        self._d: OrderedDict[int, PatternOps] = OrderedDict()
        self._seen: OrderedDict[int, int] = OrderedDict()
        self.lock = threading.RLock()

    def get(self, key: int) -> PatternOps | None:
        """The operators of pattern ``key`` (marks it recently used), or None."""
        with self.lock:
            ops = self._d.get(key)
            if ops is not None:
                self._d.move_to_end(key)
            return ops

    def count(self, key: int, people: int) -> int:
        """Add ``people`` to the number of people met with pattern ``key`` since it was
        last dropped from the cache; returns the new total."""
        with self.lock:
            total = self._seen.pop(key, 0) + people
            self._seen[key] = total
            while len(self._seen) > 4096:
                self._seen.popitem(last=False)
            return total

    def put(self, key: int, ops: PatternOps) -> None:
        """Keep ``ops`` (dropping the least recently used beyond ``max_patterns``)."""
        with self.lock:
            if self.max_patterns <= 0:
                return
            self._d[key] = ops
            self._d.move_to_end(key)
            while len(self._d) > self.max_patterns:
                dropped, _ = self._d.popitem(last=False)
                self._seen.pop(dropped, None)  # must earn its place again
            self.trim()

    def trim(self) -> None:
        """Drop the least recently used patterns while the cache holds more than
        ``max_bytes`` (never the most recent one)."""
        with self.lock:
            while len(self._d) > 1 and self.nbytes > self.max_bytes:
                dropped, _ = self._d.popitem(last=False)
                self._seen.pop(dropped, None)

    def clear(self) -> None:
        """Forget every pattern."""
        with self.lock:
            self._d.clear()
            self._seen.clear()

    def __len__(self) -> int:
        return len(self._d)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached operators (bytes)."""
        with self.lock:
            return sum(o.nbytes for o in self._d.values())


#: On the CPU, ``joint_cov`` of up to this many triples (any number when torch runs on one
#: thread) runs in numpy, in blocks of this many.
JOINT_COV_NUMPY_MAX = 96


def joint_cov(ex: Tensor, ey: Tensor, ez: Tensor, e: Tensor, rho: Tensor, lam: Tensor,
              sin: Tensor, cos: Tensor, vis: Tensor, obs: Tensor, comp: Tensor,
              angle: Tensor, fitted: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Posterior 3 x 3 covariance of every joint, (P, 17, 3, 3), for P triples (visibility
    ``vis`` (P, J) of the observed slots ``obs`` (J,), component ``comp`` (P,), angle index
    ``angle`` (P,)), in the model's millimetres (before the scale and the size
    normalisation, which ``lift`` applies: times (scale x size factor)^2), of the blended
    pose relative to its joint centroid.

    Given the angle and the scale s, the release's objective of step 2 is s^2 times the
    PPCA negative log posterior in the model's millimetres: coefficients c = a / s with
    prior precision (5.2 sigma_i)^2, pose noise of precision lambda_d^2 per coordinate
    (sigma_k[25]: 1 / lambda_d ~ 12-20 mm), the 2D joints divided by s. So the covariance
    of the basis coefficients c and the image-x translation tau is
    [[D^T D + diag(rho), D^T t], [t^T D, t^T t + kappa]]^-1 / lambda_d^2 (the
    normal-equation matrix of step 2 inverted; D the masked data rows, t the translation
    column; the two other translation
    directions either do not move the pose or move it in depth as a whole, which the
    centring removes). It is propagated through the rotation U(theta)^T, the blend
    (visible joints' image rows scaled by 1 / 2.55, the observation taken as exact: so
    tau moves visible and hidden joints differently) and the centring; the
    model's noise term, an isotropic 1 / lambda_d^2 per coordinate (the variance the
    data weight and the log-det of step 4 give the unexplained directions), is propagated
    the same way and added. On the CPU: ``_joint_cov_np``, otherwise
    ``_joint_cov_torch``.

    ``fitted`` True also returns (P,) the effective number of fitted parameters: the trace
    of the hat matrix of the data rows (D t) (D^T D + diag(rho, kappa))^-1 (D t)^T, which
    ``lift`` subtracts from the number of observed coordinates for the degrees of freedom
    of its noise estimate (``fit_noise``).
    """
    P = comp.shape[0]
    if ex.device.type == "cpu" and P > 0 and (P <= JOINT_COV_NUMPY_MAX
                                              or torch.get_num_threads() == 1):
        model_args = [x.numpy() for x in (ex, ey, ez, e, rho, lam, sin, cos)]
        o, vs, cs, an = obs.numpy(), vis.numpy(), comp.numpy(), angle.numpy()
        blk = JOINT_COV_NUMPY_MAX
        got = [_joint_cov_np(*model_args, vs[p0 : p0 + blk], o, cs[p0 : p0 + blk],
                             an[p0 : p0 + blk], fitted=fitted) for p0 in range(0, P, blk)]
        if not fitted:
            return torch.from_numpy(got[0] if len(got) == 1 else np.concatenate(got))
        cov, fit_n = (np.concatenate(x) for x in zip(*got, strict=True))
        return torch.from_numpy(cov), torch.from_numpy(fit_n)
    return _joint_cov_torch(ex, ey, ez, e, rho, lam, sin, cos, vis, obs, comp, angle,
                            fitted=fitted)


def _joint_cov_torch(ex: Tensor, ey: Tensor, ez: Tensor, e: Tensor, rho: Tensor,
                     lam: Tensor, sin: Tensor, cos: Tensor, vis: Tensor, obs: Tensor,
                     comp: Tensor, angle: Tensor, fitted: bool = False
                     ) -> Tensor | tuple[Tensor, Tensor]:
    """``joint_cov`` in torch (any device)."""
    dt, dev = ex.dtype, ex.device
    P = comp.shape[0]
    nj = e.shape[-1]
    v = vis.to(dt)
    s, c = sin[angle], cos[angle]  # (P,)
    exv, eyv, ezv = ex[comp] * v[..., None], ey[comp] * v[..., None], ez[comp] * v[..., None]
    dx = s[:, None, None] * exv + c[:, None, None] * eyv  # (P, J, B)
    lam_p = lam[comp]
    kappa = solve.TRANSLATION_PRIOR / (1.0 + s * s) / (lam_p * lam_p)
    B = ex.shape[-1]
    # precision of (b, tau) (divided by lambda_d^2): tau moves image x of visible joints
    prec = torch.zeros(P, B + 1, B + 1, dtype=dt, device=dev)
    prec[:, :B, :B] = torch.diag_embed(rho[comp]) + ezv.mT @ ezv + dx.mT @ dx
    dtv = (dx * v[..., None]).sum(1)  # D^T t (P, B)
    prec[:, :B, B] = dtv
    prec[:, B, :B] = dtv
    prec[:, B, B] = v.sum(-1) + kappa
    sig0 = torch.cholesky_inverse(torch.linalg.cholesky(prec))
    sig = sig0 / (lam_p * lam_p)[:, None, None]
    # the basis in the output frame: rows (x, y, z) = U^T e (sign of the output irrelevant)
    eb = e[comp]  # (P, B, 3, 17)
    sb, cb = s[:, None, None], c[:, None, None]
    rx = sb * eb[:, :, 0] + cb * eb[:, :, 1]
    ry = -cb * eb[:, :, 0] + sb * eb[:, :, 1]
    g = torch.zeros(P, B + 1, 3, nj, dtype=dt, device=dev)
    g[:, :B] = torch.stack([rx, ry, eb[:, :, 2]], dim=2)
    # tau: output x translation (the depth translation is constant over the joints and
    # leaves the centred pose; the other translation direction does not move the pose)
    g[:, B, 0] = 1.0
    d = torch.ones(P, 3, nj, dtype=dt, device=dev)  # blend factors per output coordinate
    v17 = torch.zeros(P, nj, dtype=dt, device=dev)
    v17[:, obs] = v
    shrink = 1.0 - v17 * (1.0 - 1.0 / (1.0 + solve.BLEND_WEIGHT))
    d[:, 0] = shrink
    d[:, 2] = shrink
    g = g * d[:, None]
    g = g - g.mean(-1, keepdim=True)  # centring
    gj = g.permute(0, 3, 2, 1)  # (P, 17, 3, B + 1)
    cov = gj @ sig[:, None] @ gj.mT  # (P, 17, 3, 3)
    # noise: sigma^2 Cen D^2 Cen^T, per joint diagonal
    d2 = d * d
    noise = d2 * (1.0 - 2.0 / nj) + d2.sum(-1, keepdim=True) / (nj * nj)  # (P, 3, 17)
    noise = noise / (lam_p * lam_p)[:, None, None]
    cov = cov + torch.diag_embed(noise.mT)
    cov = 0.5 * (cov + cov.mT)
    if not fitted:
        return cov
    # data rows of (b, tau): image y (-Ez: the sign leaves the trace), image x (Dx, tau)
    rows = torch.cat([torch.cat([ezv, torch.zeros_like(v)[..., None]], -1),
                      torch.cat([dx, v[..., None]], -1)], 1)  # (P, 2J, B + 1)
    return cov, ((rows @ sig0) * rows).sum((1, 2))


def _joint_cov_np(ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, e: np.ndarray,
                  rho: np.ndarray, lam: np.ndarray, sin: np.ndarray, cos: np.ndarray,
                  vis: np.ndarray, obs: np.ndarray, comp: np.ndarray, angle: np.ndarray,
                  fitted: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``joint_cov`` in numpy (same arguments as arrays; the same maths): (P, 17, 3, 3).

    The precision is factorised, M = L L^T, and the covariance of joint j is
    Y_j^T Y_j / lambda_d^2 with Y = L^-1 G (G the centred, blended map from (b, tau) to
    the pose)."""
    P = comp.shape[0]
    J, B = ex.shape[1:]
    nj = e.shape[-1]
    v = vis.astype(np.float64)
    s, c = sin[angle], cos[angle]  # (P,)
    vb = v[..., None]
    lam2 = lam[comp] ** 2
    # data rows of (b, tau): image y (-Ez), image x (Dx = s Ex + c Ey; tau on visible x)
    dmat = np.zeros((P, 2 * J, B + 1))
    dmat[:, :J, :B] = ez[comp] * vb
    dmat[:, J:, :B] = (s[:, None, None] * ex[comp] + c[:, None, None] * ey[comp]) * vb
    dmat[:, J:, B] = v
    prec = dmat.swapaxes(1, 2) @ dmat
    diag = prec.reshape(P, -1)[:, :: B + 2]  # a view of the diagonals
    diag[:, :B] += rho[comp]
    diag[:, B] += solve.TRANSLATION_PRIOR / (1.0 + s * s) / lam2
    # G: (b, tau) -> the pose in the output frame, rows (x, y, z) = U^T e, tau moving x
    rot = np.zeros((P, 3, 3))
    rot[:, 0, 0] = rot[:, 1, 1] = s
    rot[:, 0, 1] = c
    rot[:, 1, 0] = -c
    rot[:, 2, 2] = 1.0
    et = np.ascontiguousarray(e.transpose(0, 2, 1, 3)).reshape(e.shape[0], 3, B * nj)
    g = np.zeros((P, 3, B + 1, nj))  # (output coordinate, b and tau, joint)
    g[:, :, :B] = (rot @ et[comp]).reshape(P, 3, B, nj)
    g[:, 0, B] = 1.0
    d = np.ones((P, 3, nj))  # blend factors per output coordinate
    d[:, 0, obs] = d[:, 2, obs] = 1.0 - v * (1.0 - 1.0 / (1.0 + solve.BLEND_WEIGHT))
    g *= d[:, :, None]
    g = g.reshape(-1, nj) @ (np.eye(nj) - 1.0 / nj)  # centring
    gk = g.reshape(P, 3, B + 1, nj).transpose(0, 2, 1, 3).reshape(P, B + 1, 3 * nj)
    lt = torch.from_numpy(np.linalg.cholesky(prec))
    if fitted:  # the data rows as further right-hand sides: trace of the hat matrix
        gk = np.concatenate([gk, dmat.swapaxes(1, 2)], -1)
    y = torch.linalg.solve_triangular(lt, torch.from_numpy(gk), upper=False).numpy()
    if fitted:
        hat = y[..., 3 * nj :]
        fit_n = (hat * hat).sum((1, 2))
        y = y[..., : 3 * nj]
    yj = np.ascontiguousarray(y.reshape(P, B + 1, 3, nj).transpose(0, 3, 2, 1))
    cov = yj @ yj.swapaxes(-1, -2)  # (P, 17, 3, 3)
    cov += cov.swapaxes(-1, -2)
    # noise: sigma^2 Cen D^2 Cen^T, per joint diagonal
    d2 = d * d
    noise = d2 * (1.0 - 2.0 / nj) + d2.sum(-1, keepdims=True) / (nj * nj)  # (P, 3, 17)
    cov.reshape(P, nj, 9)[..., ::4] += 2.0 * noise.swapaxes(1, 2)
    cov *= (0.5 / lam2)[:, None, None, None]
    return (cov, fit_n) if fitted else cov
