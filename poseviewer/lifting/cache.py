"""The per-visibility-pattern operators of the fit (``PatternOps``) and their cache.

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
exactly the maths of ``direct`` (the translation directions eliminated analytically, the
basis coefficients in the dual, the image-y block once per component, a 14 x 14 SPD
system per angle), now with the 29 columns of u as right-hand sides.

The joint covariances (``covariance.joint_cov``) do not depend on the 2D joints either:
``NoiseTerms`` keeps them per pattern, component and angle once computed. Everything here
is numpy, float64; ``PatternCache`` keeps the prepared patterns (LRU, within a memory
budget).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from poseviewer.lifting import covariance, spec
from poseviewer.lifting.params import ModelArrays


@dataclass
class PatternOps:
    """The operators of one visibility pattern (all components, all angles)."""

    mask: np.ndarray  #: (J,) bool, observed-slot order
    full_i: np.ndarray  #: (P,) with full_j: the upper triangle over the entries of u that
    #: can be non-zero (visible x, visible y, 1), as indices of u
    full_j: np.ndarray
    res_packed: np.ndarray  #: (P, K * A): r = (u_i u_j over the pairs) @ res_packed
    coef: np.ndarray  #: (K, A, 4 + B, 29) a_0 .. a_{3+B} as linear maps of u
    # what the capped refit is derived from
    q: np.ndarray  #: (K, A, 31, 31) quadratic form over [u, -a_0, -tau] (divided by lam^2)
    w: np.ndarray  #: (K, A, B, 31) R~ Dx^T S^-1 [G h t]
    bg: np.ndarray  #: (K, B, 29) posterior mean of the basis given image y, as a map of u
    bh: np.ndarray  #: (K, B)
    kappa: np.ndarray  #: (K, A)
    capped: dict[bool, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """release_exact -> the capped refit's (residual forms, coefficient maps), on first
    need (``capped_ops``)."""
    elev: dict[Any, Any] = field(default_factory=dict)
    """The elevated operators (``elevation.ElevOps``) of the current grid, on first need."""
    full: bool = True
    """False: only the pairs and the level covariances' terms (what the elevation grid
    needs, ``pairs_only``); the yaw-only fit rebuilds such a pattern (``build``)."""
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
        n += sum(a.nbytes for a in (self.q, self.w, self.bg, self.bh, self.kappa))
        n += sum(a.nbytes + b.nbytes for a, b in self.capped.values())
        n += sum(e.nbytes for e in self.elev.values())
        return n


class NoiseTerms:
    """``covariance.fit_noise_terms`` of ``covariance.joint_cov`` for one visibility
    pattern, per (component, angle), computed on first need and kept (the covariances do
    not depend on the 2D joints)."""

    def __init__(self, mask: np.ndarray, K: int, A: int) -> None:
        self.mask = np.asarray(mask, dtype=bool)
        self.A = A
        self.cov_t = np.zeros((K * A, spec.NUM_JOINTS_3D, 3, 3))  #: joint_cov x dof / (dof - 2)
        self.qd = np.zeros((K * A, 2))  #: (lambda_d^2 / dof, dof); dof 0: not yet filled

    @property
    def nbytes(self) -> int:
        """Memory held (bytes)."""
        return self.cov_t.nbytes + self.qd.nbytes

    def get(self, arrays: ModelArrays, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cov_t (..., 17, 3, 3) in normalised units, (lambda_d^2 / dof, dof) (..., 2)) for
        flat indices ``component * A + angle`` (any shape)."""
        qd = self.qd.take(flat, axis=0)
        if not qd.min() > 0.0:  # q and dof > 0 once filled
            A = self.A
            todo = np.unique(flat[qd[..., 1] == 0])
            vis = np.repeat(self.mask[None], len(todo), axis=0)
            cov, fitted = covariance.joint_cov(arrays, vis, todo // A, todo % A, fitted=True)
            self.cov_t[todo], self.qd[todo] = covariance.fit_noise_terms(
                cov, fitted, 2.0 * float(self.mask.sum()), arrays.lam[todo // A])
            qd = self.qd.take(flat, axis=0)
        return self.cov_t.take(flat, axis=0), qd


def build(arrays: ModelArrays, mask: np.ndarray) -> PatternOps:
    """Prepare the operators of visibility ``mask`` (J,) bool (observed-slot order) for
    every component and angle of the yaw grid."""
    a = arrays
    ex, ey, ez, lam = a.ex, a.ey, a.ez, a.lam
    sin, cos = spec.SIN, spec.COS
    K, J, B = ex.shape
    A = sin.shape[0]
    nu = 2 * J + 1
    v = np.asarray(mask, dtype=np.float64)
    exv, eyv, ezv = ex * v[:, None], ey * v[:, None], ez * v[:, None]
    # image-y block, once per component (as in direct.fit_pairs, right-hand sides = u)
    prec = ezv.swapaxes(-1, -2) @ ezv
    bi = np.arange(B)
    prec[:, bi, bi] += a.rho
    rt = np.linalg.inv(prec)
    dg = np.zeros((K, B, nu))
    dg[:, :, J : 2 * J] = -ezv.swapaxes(-1, -2)  # D_y^T g_y, g_y = v w_y
    bg = rt @ dg
    hy = -a.muz * v
    dh = -(ezv.swapaxes(-1, -2) @ hy[..., None])[..., 0]
    bh = (rt @ dh[..., None])[..., 0]
    ygg = np.zeros((K, nu, nu))
    ygg[:, J : 2 * J, J : 2 * J] = np.diag(v)
    ygg = ygg - dg.swapaxes(-1, -2) @ bg
    ygh = np.zeros((K, nu))
    ygh[:, J : 2 * J] = hy
    ygh = ygh - (dg.swapaxes(-1, -2) @ bh[..., None])[..., 0]
    yhh = (hy * hy).sum(-1) - (dh * bh).sum(-1)
    # per angle: x block
    s = sin[None, :, None, None]
    c = cos[None, :, None, None]
    # Dx = s Ex + c Ey: every product with Dx is a trig combination of two per-component ones
    exrt, eyrt = exv @ rt, eyv @ rt
    dxrt = s * exrt[:, None] + c * eyrt[:, None]  # (K, A, J, B)
    mxx, myy = exrt @ exv.swapaxes(-1, -2), eyrt @ eyv.swapaxes(-1, -2)
    mxy = exrt @ eyv.swapaxes(-1, -2)
    smat = ((s * s) * mxx[:, None] + (s * c) * (mxy + mxy.swapaxes(-1, -2))[:, None]
            + (c * c) * myy[:, None])
    ar = np.arange(J)
    smat[..., ar, ar] += 1.0  # S = I + Dx R~ Dx^T >= I
    f = np.zeros((K, A, J, nu + 2))
    f[..., :nu] = -(s * (exv @ bg)[:, None] + c * (eyv @ bg)[:, None])
    f[..., ar, ar] += v
    hx = (s[..., 0] * (v * a.mux - (exv @ bh[..., None])[..., 0])[:, None]
          + c[..., 0] * (v * a.muy - (eyv @ bh[..., None])[..., 0])[:, None])
    f[..., nu] = hx
    f[..., nu + 1] = v
    z = np.linalg.inv(smat) @ f
    q = f.swapaxes(-1, -2) @ z  # (K, A, nu + 2, nu + 2)
    q[..., :nu, :nu] += ygg[:, None]
    q[..., :nu, nu] += ygh[:, None]
    q[..., nu, :nu] += ygh[:, None]
    q[..., nu, nu] += yhh[:, None]
    w = dxrt.swapaxes(-1, -2) @ z  # (K, A, B, nu + 2)
    kappa = spec.TRANSLATION_PRIOR / (1.0 + sin * sin)[None, :] / (lam * lam)[:, None]

    # uncapped: minimise over p = (a_0, tau): [[thh, tht], [tht, ttt + kappa]] p = q_pu u
    thh, tht, ttt = q[..., nu, nu], q[..., nu, nu + 1], q[..., nu + 1, nu + 1]
    d = ttt + kappa
    det = thh * d - tht * tht
    qh, qt = q[..., :nu, nu], q[..., :nu, nu + 1]  # (K, A, nu)
    a0 = (qh * d[..., None] - qt * tht[..., None]) / det[..., None]
    tau = (thh[..., None] * qt - tht[..., None] * qh) / det[..., None]
    pmap = np.stack([a0, tau], axis=-2)  # (K, A, 2, nu)
    res = q[..., :nu, :nu] - q[..., :nu, nu:] @ pmap
    res *= (lam * lam)[:, None, None, None]
    res[..., nu - 1, nu - 1] += spec.SCALE_PRIOR**2
    coef = _coefficients(a0, tau, np.zeros_like(sin), sin, cos, bg, bh, w, None)
    mask = np.asarray(mask, dtype=bool).copy()
    ti, tj = pairs(mask)
    # u^T R u = sum_i R_ii u_i^2 + sum_{i<j} (R_ij + R_ji) u_i u_j
    packed = res[..., ti, tj] + np.where(ti == tj, 0.0, res[..., tj, ti])  # (K, A, P)
    return PatternOps(
        mask=mask, full_i=ti, full_j=tj,
        res_packed=np.ascontiguousarray(packed.reshape(K * A, -1).T),
        coef=np.ascontiguousarray(coef), q=q, w=w, bg=bg, bh=bh, kappa=kappa)


def pairs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The upper triangle (i, j) over the entries of u that can be non-zero for visibility
    ``mask`` (visible x, visible y, the constant), as indices of u."""
    active = np.flatnonzero(np.r_[mask, mask, True])
    pi, pj = np.triu_indices(len(active))
    return active[pi], active[pj]


def pairs_only(arrays: ModelArrays, mask: np.ndarray) -> PatternOps:
    """A ``PatternOps`` of visibility ``mask`` holding its pairs and its (empty) level
    covariances' terms only: the elevation grid's operators (``elevation.build``) need no
    more. ``full`` is False."""
    K, B = arrays.num_components, arrays.num_basis
    A = spec.NUM_ANGLES
    mask = np.asarray(mask, dtype=bool).copy()
    ti, tj = pairs(mask)
    nu = 2 * len(mask) + 1
    return PatternOps(
        mask=mask, full_i=ti, full_j=tj, res_packed=np.zeros((len(ti), 0)),
        coef=np.zeros((K, A, 0, nu)), q=np.zeros((K, A, 0, 0)), w=np.zeros((K, A, B, 0)),
        bg=np.zeros((K, B, 0)), bh=np.zeros((K, B)), kappa=np.zeros((K, A)), full=False)


def _coefficients(a0: np.ndarray, tau: np.ndarray, tau0: np.ndarray, sin: np.ndarray,
                  cos: np.ndarray, bg: np.ndarray, bh: np.ndarray, w: np.ndarray,
                  quirk_offset: float | None) -> np.ndarray:
    """(K, A, 4 + B, nu): a_0, a_1, a_2, a_3, basis as maps of u, given the maps of a_0 and
    tau (K, A, nu) and tau0 (A,) (the constant column of u is the last)."""
    K, A, nu = a0.shape
    s, c = sin[None, :, None], cos[None, :, None]
    one = np.zeros(nu)
    one[-1] = 1.0
    taup = tau - tau0[None, :, None] * one
    den = 1.0 + s * s
    a1 = taup * s / den
    a2 = taup * c / den
    a3 = a1.copy()
    if quirk_offset is not None:
        a1 = a1 + quirk_offset * one
    lhs = w[..., nu:].copy()  # (K, A, B, 2): a_0 and tau columns
    lhs[..., 0] += bh[:, None]
    basis = (w[..., :nu] + bg[:, None]) - lhs @ np.stack([a0, tau], axis=-2)
    return np.concatenate([a0[:, :, None], a1[:, :, None], a2[:, :, None], a3[:, :, None],
                           basis], axis=2)


def capped_ops(ops: PatternOps, arrays: ModelArrays, release_exact: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """(residual forms (K, A, 29, 29), coefficient maps (K, A, 4 + B, 29)) of the capped
    refit of step 3 (scale fixed at the cap), in the given mode; cached on ``ops``."""
    got = ops.capped.get(release_exact)
    if got is not None:
        return got
    q, kappa = ops.q, ops.kappa
    sin, cos = spec.SIN, spec.COS
    nu = q.shape[-1] - 2
    cap = spec.SCALE_CAP
    if release_exact:
        tau0 = (spec.SCALE_PRIOR / math.sqrt(spec.TRANSLATION_PRIOR)) * sin
    else:
        tau0 = np.zeros_like(sin)
    one = np.zeros(nu)
    one[-1] = 1.0
    # z = [u, -cap * u_last, -tau]: fold a_0 = cap into the constant column
    lmat = np.zeros((nu + 1, nu))
    lmat[:nu] = np.eye(nu)
    lmat[nu, nu - 1] = -cap
    quu = lmat.T @ q[..., : nu + 1, : nu + 1] @ lmat
    qtu = (lmat.T @ q[..., : nu + 1, nu + 1 : nu + 2])[..., 0]  # (K, A, nu)
    lin = qtu + (kappa * tau0[None, :])[..., None] * one
    d = q[..., nu + 1, nu + 1] + kappa
    tau = lin / d[..., None]
    res = quu + (kappa * tau0[None, :] ** 2)[..., None, None] * (one[:, None] * one[None, :])
    res = res - lin[..., :, None] * tau[..., None, :]
    res = res * (arrays.lam * arrays.lam)[:, None, None, None]
    a0 = np.broadcast_to(cap * one, tau.shape)
    offset = spec.SCALE_PRIOR / math.sqrt(spec.TRANSLATION_PRIOR) if release_exact else None
    coef = _coefficients(a0, tau, tau0, sin, cos, ops.bg, ops.bh, ops.w, offset)
    out = (np.ascontiguousarray(res), np.ascontiguousarray(coef))
    ops.capped[release_exact] = out
    return out


#: Default memory budget of a model's pattern cache (bytes): with the elevation grid a
#: pattern's operators take about 14 MB (K = 3; ``elevation.ElevOps``), the yaw-only ones
#: about 7 MB.
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
