"""The batched lifting maths (``../shared/docs/lifting-spec.md``), solved in torch float64.

Every person x component x yaw angle is solved at once. The release solves, per angle, an
80 x 29 regularised least-squares problem with one ``lstsq`` call; we solve exactly the same
problem (same minimiser, same residual), reorganised so that no ill-conditioned matrix is
ever formed and the per-angle work is one small, well-conditioned SPD elimination.
Everything below is divided by lambda_d^2 (the data weight) and multiplied back at the end.

1. **Translations, analytically.** After projection the three translation columns E_1, E_2,
   E_3 only move image x, through tau = sin t (a_1 + a_3) + cos t a_2. Minimising their prior
   1e-10 (a_1^2 + a_2^2 + a_3^2) (for the capped refit the quirky
   1e-10 ((a_1 + 300)^2 + a_2^2 + a_3^2)) subject to that sum leaves one unknown tau with
   prior kappa (tau - tau0)^2, kappa = 1e-10 / (1 + sin^2 t) / lambda_d^2, tau0 = 0 (capped:
   -300 sin t), and (a_1, a_2, a_3) = (tau - tau0) (s, c, s) / (1 + s^2) (+ (-300, 0, 0)
   when capped). These are the directions that make the release's system ill-conditioned
   (condition number up to 1.6e7); here they only appear in a 2 x 2 system.
2. **Basis coefficients, in the dual.** With the diagonal prior rho_i = (5.2 sigma_i /
   lambda_d)^2 the minimum over the B basis coefficients of a data residual q is
   q^T K^{-1} q, K = I + D R D^T (R = diag(1 / rho), D the masked data rows): SPD with
   eigenvalues >= 1. Its image-y block does not depend on the angle and is eliminated once
   per person and component (posterior covariance R~ = (diag(rho) + Ez^T Ez)^{-1}, posterior
   means b_u of the right-hand sides); what remains per angle is the 14 x 14 x-block Schur
   complement S(t) = I + s^2 Mxx + sc Mxy + c^2 Myy (M.. = E. R~ E.^T), also >= I.
3. **Scale and translation.** a_0 (no prior) and tau (prior kappa) are minimised exactly
   from the quadratic forms of the three right-hand sides g (observation), h (a_0 column)
   and t (the translation column, v on the x rows): a 2 x 2 solve (capped: a_0 fixed, 1 x 1).

The per-angle step is a pivot-free elimination of the augmented symmetric matrix
[[S, g, h, t], [., 0]] (angles as the last, contiguous dimension, so every update is one
vectorised rank-1 operation over all pairs and angles); S >= I makes it as stable as a
Cholesky factorisation. Only at the chosen angle are the coefficients themselves recovered
(one small solve per person and component).

On the CPU, small batches (``NUMPY_MAX_PAIRS`` pairs or fewer; any batch, in blocks, when
torch runs on one thread) are solved in numpy instead, where a call costs a microsecond or
two rather than torch's five to twenty (``_fit_pairs_np``): the
same problem, with S(t) factorised by LAPACK's Cholesky for half of the angles only
(S(t + pi) = S(t), every entry being quadratic in (sin t, cos t)) and the right-hand sides
of both angles taken from the six angle-free vectors they combine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

_T = TypeVar("_T", Tensor, np.ndarray)

#: Number of yaw angles searched (theta_j = 2 pi j / 100).
NUM_ANGLES = 100
#: Prior weight of the three translation coefficients (1e-5 squared).
TRANSLATION_PRIOR = 1e-10
#: Right-hand side of the first prior row (the scale prior, -0.003).
SCALE_PRIOR = -0.003
#: Multiplier of sigma in the regulariser weights.
SIGMA_FACTOR = 5.2
#: Weight of the observation in the blend of step 5.2.
BLEND_WEIGHT = 1.55
#: Final size normalisation of step 5.3.
OUTPUT_SIZE = 0.97 * 1174.88312988
#: Minimum number of visible joints to lift a person.
MIN_VISIBLE = 5
#: Batch elements (pairs x angles) per elimination chunk: keeps the working set in cache.
CHUNK = 800
#: On the CPU, batches of up to this many (person, component) pairs (any batch when torch
#: runs on one thread) are solved in numpy, in blocks of this many pairs.
NUMPY_MAX_PAIRS = 96
#: Matrices (pairs x angles) per factorisation chunk of the numpy path (small: cache).
NUMPY_CHUNK = 150


@dataclass
class PairFit:
    """Best-angle fit of a flat batch of (person, component) pairs."""

    residuals: Tensor  # (P, A) full ||A a - b||^2 per angle
    angle: Tensor  # (P,) int64 index of the chosen angle
    residual: Tensor  # (P,) residual at the chosen angle (not yet halved)
    coeffs: Tensor  # (P, 4 + B) a_0 .. a_{3+B} (a_0 = scale), not divided by the scale


#: Degrees of freedom below which ``fit_noise`` does not go (a Student-t with <= 2 has no
#: covariance; only people with few visible joints come near it).
MIN_NOISE_DOF = 3.0


def fit_noise(rss: _T, n_obs: _T, fitted: _T, lam: _T, scale: _T) -> tuple[_T, _T]:
    """The noise of one fit estimated from its own 2D residual, for the joint covariances.

    ``rss`` the sum of squared differences between the fit's projection and the visible
    normalised 2D joints, ``n_obs`` the number of observed coordinates (2 x visible joints),
    ``fitted`` the effective number of fitted parameters (``operators.joint_cov``),
    ``lam`` the component's data weight lambda_d and ``scale`` its a_0 (all broadcast).
    With the noise variance unknown (the release's 1 / lambda_d^2 is a weight, not a
    measured noise) and estimated as rss / (s^2 dof) in model mm^2, dof = n_obs - fitted
    (at least ``MIN_NOISE_DOF``), the posterior of the pose is a Student-t with dof degrees
    of freedom. Returns (the factor on ``joint_cov``'s covariance (computed with 1 /
    lambda_d^2): the estimated variance over 1 / lambda_d^2, at least 1 (never below the
    model's own noise), times dof / (dof - 2), the t's covariance over its scale matrix;
    dof).
    """
    if isinstance(rss, np.ndarray):  # in place: few small temporaries (the warm path)
        dof = n_obs - fitted
        np.maximum(dof, MIN_NOISE_DOF, out=dof)
        ratio = rss * (lam * lam)
        ratio /= scale * scale * dof
        np.maximum(ratio, 1.0, out=ratio)
    else:
        dof = torch.clamp_min(n_obs - fitted, MIN_NOISE_DOF)
        ratio = torch.clamp_min(rss * (lam * lam) / ((scale * scale) * dof), 1.0)
    return ratio * dof / (dof - 2.0), dof


def fit_noise_terms(cov: np.ndarray, fitted: np.ndarray, n_obs: np.ndarray, lam: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``fit_noise`` rearranged for the CPU fast path, from what does not depend on the 2D
    joints (numpy, any leading shape (..., K); ``lam`` (K,)).

    With dof = max(n_obs - fitted, ``MIN_NOISE_DOF``), the scaled covariance of a fit is
    ``cov x fit_noise(...)[0] x cov_scale x (g s)^2`` (g the size factor, s the scale)
    = ``cov_t x cov_scale x g^2 x max(rss q, s^2)``. Returns (cov_t = cov x dof /
    (dof - 2) (..., K, 17, 3, 3), (q = lambda_d^2 / dof, dof) (..., K, 2))."""
    dof = np.maximum(n_obs - fitted, MIN_NOISE_DOF)
    cov_t = cov * (dof / (dof - 2.0))[..., None, None, None]
    return cov_t, np.stack([lam * lam / dof, dof], -1)


def angles(device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """(theta, sin theta, cos theta), each (100,) float64."""
    theta = 2.0 * math.pi * torch.arange(NUM_ANGLES, dtype=torch.float64, device=device)
    theta = theta / NUM_ANGLES
    return theta, torch.sin(theta), torch.cos(theta)


def _mv(m: Tensor, x: Tensor) -> Tensor:
    return (m @ x[..., None])[..., 0]


def fit_pairs(
    wx: Tensor,
    wy: Tensor,
    vis: Tensor,
    ex: Tensor,
    ey: Tensor,
    ez: Tensor,
    mux: Tensor,
    muy: Tensor,
    muz: Tensor,
    rho: Tensor,
    lam: Tensor,
    sin: Tensor,
    cos: Tensor,
    cap: float | None = None,
    release_exact: bool = False,
) -> PairFit:
    """Fit P (person, component) pairs at every angle and keep the best angle of each.

    Per pair: ``wx, wy, vis`` (P, J) normalised observed joints (zero where invisible) and
    visibility as 0/1 float64; ``ex, ey, ez`` (P, J, B) basis rows at the observed joints;
    ``mux, muy, muz`` (P, J) mean pose rows; ``rho`` (P, B) = (5.2 sigma_i / lambda_d)^2;
    ``lam`` (P,) = lambda_d. ``sin, cos`` (A,). ``cap``: None for step 2, or the fixed
    scale of the refit of step 3. In that refit ``release_exact`` keeps the release's
    stale prior right-hand side (-0.003 on the row that now belongs to E_1: the pose is
    shifted in depth by tens of metres); otherwise every translation prior targets 0.
    On the CPU: ``_fit_pairs_np`` (see the module docstring), otherwise ``_fit_pairs_torch``.
    """
    P = ex.shape[0]
    if wx.device.type == "cpu" and P > 0 and (P <= NUMPY_MAX_PAIRS or torch.get_num_threads() == 1):
        per_pair = [x.numpy() for x in (wx, wy, vis, ex, ey, ez, mux, muy, muz, rho, lam)]
        sc = (sin.numpy(), cos.numpy())
        outs = [_fit_pairs_np(*(x[p0 : p0 + NUMPY_MAX_PAIRS] for x in per_pair), *sc, cap=cap,
                              release_exact=release_exact)
                for p0 in range(0, P, NUMPY_MAX_PAIRS)]
        return PairFit(*(torch.from_numpy(x[0] if len(outs) == 1 else np.concatenate(x))
                         for x in zip(*outs, strict=True)))
    return _fit_pairs_torch(wx, wy, vis, ex, ey, ez, mux, muy, muz, rho, lam, sin, cos, cap,
                            release_exact)


def _fit_pairs_torch(
    wx: Tensor,
    wy: Tensor,
    vis: Tensor,
    ex: Tensor,
    ey: Tensor,
    ez: Tensor,
    mux: Tensor,
    muy: Tensor,
    muz: Tensor,
    rho: Tensor,
    lam: Tensor,
    sin: Tensor,
    cos: Tensor,
    cap: float | None = None,
    release_exact: bool = False,
) -> PairFit:
    """``fit_pairs`` in torch (any device; the elimination of the module docstring)."""
    P, J, _ = ex.shape
    A = sin.shape[0]
    dt, dev = wx.dtype, wx.device
    v = vis
    exv, eyv, ezv = ex * v[..., None], ey * v[..., None], ez * v[..., None]

    # y-block once per pair: posterior covariance of the basis coefficients given image y.
    rt = torch.cholesky_inverse(torch.linalg.cholesky(torch.diag_embed(rho) + ezv.mT @ ezv))
    ex_rt, ey_rt = exv @ rt, eyv @ rt
    mxy = ex_rt @ eyv.mT
    mats = torch.stack([ex_rt @ exv.mT, mxy + mxy.mT, ey_rt @ eyv.mT], dim=-1)  # (P,J,J,3)
    # y parts of g (observation) and h (a_0 column: pred_y = -a_0 mu_z - ...); t has none.
    gy, hy = wy * v, -muz * v
    dg, dh = -_mv(ezv.mT, gy), -_mv(ezv.mT, hy)  # D_y^T u_y with D_y = -Ez
    bg, bh = _mv(rt, dg), _mv(rt, dh)  # posterior means given the y rows
    ygg = (gy * gy).sum(-1) - (dg * bg).sum(-1)
    ygh = (gy * hy).sum(-1) - (dg * bh).sum(-1)
    yhh = (hy * hy).sum(-1) - (dh * bh).sum(-1)
    # x parts, per angle: g_x = wx - s Ex b_g - c Ey b_g, h_x = s (mu_x - Ex b_h) + c (...)
    wxv = wx * v
    gvec = torch.stack([wxv, -_mv(exv, bg), -_mv(eyv, bg)], dim=-1)  # (P, J, 3)
    hvec = torch.stack([v * mux - _mv(exv, bh), v * muy - _mv(eyv, bh)], dim=-1)  # (P, J, 2)
    # Every entry of the augmented matrix [[S, g, h, t], [., 0]] is a combination of the six
    # functions (s^2, sc, c^2, 1, s, c) of the angle: one matmul builds it for all angles.
    n2 = J + 3
    trig = torch.stack([sin * sin, sin * cos, cos * cos, torch.ones_like(sin), sin, cos])
    diag = torch.arange(J, device=dev)
    basis = torch.zeros(P, n2, n2, 6, dtype=dt, device=dev)
    basis[:, :J, :J, :3] = mats
    basis[:, diag, diag, 3] = 1.0
    basis[:, :J, J, 3:] = gvec  # weights 1, s, c
    basis[:, :J, J + 1, 4:] = hvec  # weights s, c
    basis[:, :J, J + 2, 3] = v
    basis = basis.view(P, n2 * n2, 6)

    kappa = TRANSLATION_PRIOR / (1.0 + sin * sin)[None, :] / (lam * lam)[:, None]  # (P, A)
    quirk = cap is not None and release_exact
    if quirk:
        # The first prior row keeps -0.003 while it now belongs to E_1: tau0 = -300 sin t.
        tau0 = (SCALE_PRIOR / math.sqrt(TRANSLATION_PRIOR)) * sin  # (A,)
    else:
        tau0 = torch.zeros_like(sin)

    residuals = torch.empty(P, A, dtype=dt, device=dev)
    step = max(1, CHUNK // A)  # pairs per chunk: (pairs x angles) stays around CHUNK
    for p0 in range(0, P, step):
        sl = slice(p0, min(P, p0 + step))
        aug = (basis[sl] @ trig).view(-1, n2, n2, A)
        # Symmetric pivot-free elimination using the rows only (S >= I).
        for k in range(J):
            row = aug[:, k, k + 1 :]
            aug[:, k + 1 :, k + 1 :].addcmul_(
                row[:, :, None], row[:, None] / aug[:, k, None, None, k], value=-1.0)
        qf = -aug[:, J:, J:]  # (n, 3, 3, A) = [g h t]^T S^{-1} [g h t]
        tgg = ygg[sl, None] + qf[:, 0, 0]
        tgh = ygh[sl, None] + qf[:, 0, 1]
        thh = yhh[sl, None] + qf[:, 1, 1]
        tgt, tht, ttt = qf[:, 0, 2], qf[:, 1, 2], qf[:, 2, 2]
        residuals[sl] = _min_residual(tgg, tgh, thh, tgt, tht, ttt, kappa[sl], tau0, cap)[0]
        residuals[sl] = residuals[sl] * (lam[sl] * lam[sl])[:, None]
        if cap is None:
            residuals[sl] += SCALE_PRIOR**2

    best = torch.argmin(residuals, dim=1)  # first minimum on ties
    res_best = residuals.gather(1, best[:, None])[:, 0]

    # Coefficients at the chosen angle only: one solve per pair.
    s, c = sin[best], cos[best]  # (P,)
    augb = (basis * trig[:, best].mT[:, None, :]).sum(-1).view(P, n2, n2)
    sb, rhs = augb[:, :J, :J], augb[:, :J, J:]  # S and [g h t] at the chosen angle
    sol = torch.linalg.solve(sb, rhs)
    qf = rhs.mT @ sol  # (P, 3, 3)
    kb = kappa.gather(1, best[:, None])[:, 0]
    t0 = tau0[best]
    _, a0, tau = _min_residual(ygg + qf[:, 0, 0], ygh + qf[:, 0, 1], yhh + qf[:, 1, 1],
                               qf[:, 0, 2], qf[:, 1, 2], qf[:, 2, 2], kb, t0, cap)
    z = sol[..., 0] - a0[:, None] * sol[..., 1] - tau[:, None] * sol[..., 2]  # S^{-1} q^
    dx = s[:, None, None] * exv + c[:, None, None] * eyv  # (P, J, B)
    coef_b = (bg - a0[:, None] * bh) + _mv(rt, _mv(dx.mT, z))
    taup = tau - t0
    den = 1.0 + s * s
    a1 = taup * s / den
    a2 = taup * c / den
    a3 = a1.clone()
    if quirk:
        a1 = a1 + SCALE_PRIOR / math.sqrt(TRANSLATION_PRIOR)
    coeffs = torch.cat([a0[:, None], a1[:, None], a2[:, None], a3[:, None], coef_b], dim=1)
    return PairFit(residuals, best, res_best, coeffs)


def _fit_pairs_np(wx: np.ndarray, wy: np.ndarray, v: np.ndarray, ex: np.ndarray,
                  ey: np.ndarray, ez: np.ndarray, mux: np.ndarray, muy: np.ndarray,
                  muz: np.ndarray, rho: np.ndarray, lam: np.ndarray, sin: np.ndarray,
                  cos: np.ndarray, cap: float | None = None, release_exact: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``fit_pairs`` in numpy (same arguments as arrays): (residuals, angle, residual,
    coeffs) as in ``PairFit``.

    Joints invisible in every pair are dropped (identity rows of S, zero right-hand
    sides: they change nothing). When the second half of the angles is the first plus pi
    (S(t + pi) = S(t), h(t + pi) = -h(t)), S is factorised for the first half only, with
    the right-hand sides of both: Q = [g(t), g(t + pi), h(t), t]. One Cholesky
    factorisation of [[S, Q], [Q^T, C I]] (C = 4 |V|^2 + 1 > |Q|^2 >= the largest
    eigenvalue of Q^T S^-1 Q, so it is positive definite; V the six angle-free vectors
    that g, h and t combine) gives in its bottom-left block Y = Q^T L^-T, and
    Q^T S^-1 Q = Y Y^T.
    """
    keep = np.flatnonzero(v.any(0))
    if len(keep) < v.shape[1]:
        wx, wy, v, ex, ey, ez, mux, muy, muz = (
            x[:, keep] for x in (wx, wy, v, ex, ey, ez, mux, muy, muz))
    P, J, B = ex.shape
    A = sin.shape[0]
    vb = v[..., None]
    ezv = ez * vb
    exy = np.concatenate([ex, ey], axis=1) * np.concatenate([vb, vb], axis=1)  # (P, 2J, B)
    # y-block once per pair (as in fit_pairs)
    prec = ezv.swapaxes(1, 2) @ ezv
    prec.reshape(P, -1)[:, :: B + 1] += rho
    rt = np.linalg.inv(prec)
    mm = (exy @ rt) @ exy.swapaxes(1, 2)  # (P, 2J, 2J): [[Mxx, Mxy], [Myx, Myy]]
    yv = np.stack([wy * v, -muz * v], axis=-1)  # (P, J, 2): g_y, h_y
    d = -(ezv.swapaxes(1, 2) @ yv)  # (P, B, 2): D_y^T [g_y h_y]
    b = rt @ d  # (P, B, 2): posterior means b_g, b_h
    yq = yv.swapaxes(1, 2) @ yv - d.swapaxes(1, 2) @ b  # (P, 2, 2)
    exyb = exy @ b  # (P, 2J, 2)
    # V: g = V0 + s V1 + c V2, h = s V3 + c V4, t = V5
    vec = np.empty((P, 6, J))
    vec[:, 0] = wx * v
    vec[:, 1:3] = -exyb[..., 0].reshape(P, 2, J)
    vec[:, 3:5] = exyb[..., 1].reshape(P, 2, J)
    vec[:, 3] -= v * mux
    vec[:, 4] -= v * muy
    vec[:, 3:5] *= -1.0
    vec[:, 5] = v
    # the augmented matrix as a combination of (s^2, sc, c^2, 1, s, c, s', c') (s' = sin of
    # the angle plus pi): rows J.. hold g(t), g(t + pi), h(t), t
    m = J + 4
    basis = np.zeros((P, 8, m, m))
    basis[:, 0, :J, :J] = mm[:, :J, :J]
    basis[:, 1, :J, :J] = mm[:, :J, J:] + mm[:, J:, :J]
    basis[:, 2, :J, :J] = mm[:, J:, J:]
    basis[:, 3, :J, :J] = np.eye(J)
    basis[:, 3, J : J + 2, :J] = vec[:, None, 0]
    basis[:, 3, J + 3, :J] = vec[:, 5]
    basis[:, 4:6, J, :J] = vec[:, 1:3]
    basis[:, 4:6, J + 2, :J] = vec[:, 3:5]
    basis[:, 6:8, J + 1, :J] = vec[:, 1:3]
    basis[:, :, :J, J:] = basis[:, :, J:, :J].swapaxes(-1, -2)
    dv = np.arange(J, m)
    basis[:, 3, dv, dv] = 4.0 * (vec * vec).sum((1, 2))[:, None] + 1.0
    basis = basis.reshape(P, 8, m * m)
    H = A // 2
    if A % 2 or max(np.abs(sin[H:] + sin[:H]).max(), np.abs(cos[H:] + cos[:H]).max()) > 1e-12:
        H = A  # no half-period: every angle factorised (g(t + pi) unused)
    trig = np.empty((A, 8))
    trig[:, 0], trig[:, 1], trig[:, 2] = sin * sin, sin * cos, cos * cos
    trig[:, 3], trig[:, 4], trig[:, 5] = 1.0, sin, cos
    trig[:, 6:] = trig[np.arange(A) - H, 4:6] if H < A else trig[:, 4:6]
    wmat = np.empty((P, H, 4, 4))
    step = max(1, NUMPY_CHUNK // H)
    for p0 in range(0, P, step):
        sl = slice(p0, min(P, p0 + step))
        aug = (trig[:H] @ basis[sl]).reshape(-1, H, m, m)
        y = np.linalg.cholesky(aug)[..., J:, :J]  # (n, H, 4, J) = Q^T L^-T
        wmat[sl] = y @ y.swapaxes(-1, -2)
    # (gg, gh, hh, gt, ht, tt) of [g h t]^T S^-1 [g h t] at every angle
    wf = wmat.reshape(P, H, 16)
    qf = wf[..., [0, 2, 10, 3, 11, 15]]
    if H < A:
        qf = np.concatenate([qf, wf[..., [5, 6, 10, 7, 11, 15]] * [1, -1, 1, 1, -1, 1]], 1)
    kappa = TRANSLATION_PRIOR / (1.0 + sin * sin)[None, :] / (lam * lam)[:, None]  # (P, A)
    quirk = cap is not None and release_exact
    tau0 = (SCALE_PRIOR / math.sqrt(TRANSLATION_PRIOR)) * sin if quirk else np.zeros(A)
    res, a0s, taus = _min_residual(
        yq[:, 0, 0, None] + qf[..., 0], yq[:, 0, 1, None] + qf[..., 1],
        yq[:, 1, 1, None] + qf[..., 2], qf[..., 3], qf[..., 4], qf[..., 5], kappa, tau0, cap)
    residuals = res * (lam * lam)[:, None]
    if cap is None:
        residuals += SCALE_PRIOR**2
    best = residuals.argmin(1)  # first minimum on ties
    ar = np.arange(P)
    res_best = residuals[ar, best]

    # coefficients at the chosen angle: z = S^-1 (g - a_0 h - tau t)
    a0, tau = a0s[ar, best], taus[ar, best]
    s, c = sin[best], cos[best]
    sb = (trig[best, None] @ basis).reshape(P, m, m)[:, :J, :J]
    wq = np.stack([np.ones(P), s, c, -a0 * s, -a0 * c, -tau], axis=1)  # (P, 6)
    z = np.linalg.solve(sb, (wq[:, None] @ vec).swapaxes(1, 2))  # (P, J, 1)
    dx = s[:, None, None] * exy[:, :J] + c[:, None, None] * exy[:, J:]  # (P, J, B)
    coef_b = (b[..., 0] - a0[:, None] * b[..., 1]) + (rt @ (dx.swapaxes(1, 2) @ z))[..., 0]
    taup = tau - tau0[best]
    den = 1.0 + s * s
    coeffs = np.empty((P, 4 + B))
    coeffs[:, 0] = a0
    coeffs[:, 1] = coeffs[:, 3] = taup * s / den
    coeffs[:, 2] = taup * c / den
    if quirk:
        coeffs[:, 1] += SCALE_PRIOR / math.sqrt(TRANSLATION_PRIOR)
    coeffs[:, 4:] = coef_b
    return residuals, best, res_best, coeffs


def _min_residual(tgg: _T, tgh: _T, thh: _T, tgt: _T, tht: _T, ttt: _T, kappa: _T, tau0: _T,
                  cap: float | None) -> tuple[_T, _T, _T]:
    """Minimise (g - a0 h - tau t)^T K^-1 (...) + kappa (tau - tau0)^2 over a0 and tau
    (a0 = cap when capped). Returns (minimum, a0, tau)."""
    if cap is None:
        # tau0 = 0: [[thh, tht], [tht, ttt + kappa]] [a0, tau] = [tgh, tgt]
        d = ttt + kappa
        det = thh * d - tht * tht
        a0 = (tgh * d - tgt * tht) / det
        tau = (thh * tgt - tht * tgh) / det
        res = tgg - a0 * tgh - tau * tgt
        return res, a0, tau
    qq = tgg - 2.0 * cap * tgh + cap * cap * thh
    qt = tgt - cap * tht
    d = ttt + kappa
    tau = (qt + kappa * tau0) / d
    res = qq + kappa * tau0 * tau0 - (qt + kappa * tau0) * tau
    a0 = torch.full_like(tau, cap) if isinstance(tau, Tensor) else np.full_like(tau, cap)
    return res, a0, tau


#: Camera elevations searched with the yaws (degrees; positive: the camera looks down on
#: the person, R = R_x(e) R_z(yaw)). The level one (0) is solved exactly as the
#: release's yaw-only fit; ``release_exact`` searches it alone.
ELEVATIONS_DEG = (-15.0, 0.0, 15.0, 30.0, 45.0, 60.0, 75.0)
#: The release's yaw-only fit (a level camera): the default. The grid costs a visibility
#: pattern about 0.15 s to prepare on first sight (yaw-only: ~10 ms; measured on a 2-core
#: CPU), so a folder of photos estimates about 2.5x slower with it: users turn it on
#: (``PoseModel3D.elevation_search``, ``--elevation-search``, the viewer's Run menu).
LEVEL = (0.0,)
#: The "spike" prior on the elevation: the residual of every non-level rotation is
#: multiplied by 1 + this, before the choice of the rotation and in the score (level photos
#: keep their fit unless a tilted camera explains the joints clearly better). Measured
#: on Human3.6M S9+S11 (every 100th pose, all joints visible): 0.15 keeps 87 % of level
#: views level; 0.3 loses tilted ones (60 deg: 1.18 x the level figure). Every elevation,
#: level included, also fits a vertical image shift (``elevation``).
ELEVATION_SPIKE = 0.15
#:
#: Step 4's size term lgdet x s^2 is multiplied by cos e at elevation e: step 1 scales the
#: 2D pose by its image height, which a tilted camera shortens (by about cos e for an
#: upright person), so |s| grows with e and the unscaled term picks the component that
#: explains the image with the largest 3D pose, not the best one (measured on Human3.6M
#: S9+S11, camera at 60 deg: 78 mm P-MPJPE unscaled, 59 mm with cos e). Applied in
#: ``fast.lift``.
#:
#: Factor on the joint covariances of the elevation grid's fit (times the model's
#: ``cov_scale``). The posterior is the one given the chosen rotation; the grid's fit
#: explains the 2D joints more closely (its vertical shift removes the offset that the
#: yaw-only fit leaves in its residual, which fed its noise estimate) while the choice
#: among elevations adds error the posterior does not see. Fitted on Human3.6M S8 (every
#: 100th pose, ``eval-3d``'s projections and hidden joints: the factor that puts 90 % of
#: the true joints inside the 90 % ellipsoids); the test subjects S9+S11 then get 90.6 %
#: / 93.3 % at 90 / 95 % (yaw-only, unscaled: 92.7 / 95.3).
ELEVATION_COV_FACTOR = 2.7


def elevation_grid(elevations_deg: tuple[float, ...]) -> tuple[np.ndarray, int]:
    """(the elevations in radians (E,), the index of the level one) of a grid that must
    hold 0 (the release's fit) and lie within (-90, 90) degrees."""
    e = np.asarray(elevations_deg, dtype=np.float64).reshape(-1)
    if not len(e) or not np.isfinite(e).all() or np.abs(e).max() >= 90.0:
        raise ValueError(f"elevations must be finite degrees in (-90, 90), got {elevations_deg}")
    if len(np.unique(e)) != len(e):
        raise ValueError(f"elevations must be distinct, got {elevations_deg}")
    level = np.flatnonzero(e == 0.0)
    if not len(level):
        raise ValueError(f"the elevation grid must hold 0 (level), got {elevations_deg}")
    return np.deg2rad(e), int(level[0])


#: LSP's head top as the 3D model sees it, in the elevation grid's fit: the CPM head top is
#: observed as the point head + HEAD_TOP_OFFSET x (head - neck/nose) of the H36M-17 pose
#: (Human3.6M's "head" joint is the middle of the head, not its top), the joint that the
#: fit's residual, the blend and the projected head top (``joints_2d``'s head slot) use.
#: Learned from LSP-extended training labels through the fit's residual
#: (``scripts/head_top_offset.py``: the offset where the training labels' projected head top
#: has no bias, 2.647 with the bundled model on 600 training labels; large because the fit
#: absorbs part of any offset); 0 is the release's observation.
HEAD_TOP_OFFSET = 2.65
