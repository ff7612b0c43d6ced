"""The direct least-squares solve of spec steps 2-3 (``../shared/docs/lifting-spec.md``)
for (person, component) pairs whose visibility pattern has no prepared operators
(``cache``): numpy, float64, on the CPU.

Every pair x yaw angle is solved at once. The release solves, per angle, an 80 x 29
regularised least-squares problem with one ``lstsq`` call; we solve exactly the same problem
(same minimiser, same residual), reorganised so that no ill-conditioned matrix is ever
formed and the per-angle work is one small, well-conditioned SPD factorisation. Everything
below is divided by lambda_d^2 (the data weight) and multiplied back at the end.

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

S(t) is factorised by LAPACK's Cholesky for half of the angles only (S(t + pi) = S(t),
every entry being quadratic in (sin t, cos t)), with the right-hand sides of both angles
taken from the six angle-free vectors they combine; only at the chosen angle are the
coefficients themselves recovered (one small solve per pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from poseviewer.lifting import spec

#: Pairs per block of ``fit_pairs`` (keeps the working set in cache).
BLOCK = 96
#: Matrices (pairs x angles) per factorisation chunk (small: cache).
CHUNK = 150


@dataclass
class PairFit:
    """Best-angle fit of a flat batch of (person, component) pairs."""

    residuals: np.ndarray  #: (P, A) full ||A a - b||^2 per angle
    angle: np.ndarray  #: (P,) int64 index of the chosen angle
    residual: np.ndarray  #: (P,) residual at the chosen angle (not yet halved)
    coeffs: np.ndarray  #: (P, 4 + B) a_0 .. a_{3+B} (a_0 = scale), not divided by the scale


def fit_pairs(wx: np.ndarray, wy: np.ndarray, vis: np.ndarray, ex: np.ndarray,
              ey: np.ndarray, ez: np.ndarray, mux: np.ndarray, muy: np.ndarray,
              muz: np.ndarray, rho: np.ndarray, lam: np.ndarray,
              sin: np.ndarray = spec.SIN, cos: np.ndarray = spec.COS,
              cap: float | None = None, release_exact: bool = False) -> PairFit:
    """Fit P (person, component) pairs at every angle and keep the best angle of each.

    Per pair: ``wx, wy, vis`` (P, J) normalised observed joints (zero where invisible) and
    visibility as 0/1 float64; ``ex, ey, ez`` (P, J, B) basis rows at the observed joints;
    ``mux, muy, muz`` (P, J) mean pose rows; ``rho`` (P, B) = (5.2 sigma_i / lambda_d)^2;
    ``lam`` (P,) = lambda_d. ``sin, cos`` (A,) the yaw grid. ``cap``: None for step 2, or
    the fixed scale of the refit of step 3. In that refit ``release_exact`` keeps the
    release's stale prior right-hand side (-0.003 on the row that now belongs to E_1: the
    pose is shifted in depth by tens of metres); otherwise every translation prior targets
    0. Solved in blocks of ``BLOCK`` pairs.
    """
    per_pair = (wx, wy, vis, ex, ey, ez, mux, muy, muz, rho, lam)
    P = ex.shape[0]
    outs = [_fit_block(*(x[p0 : p0 + BLOCK] for x in per_pair), sin, cos, cap=cap,
                       release_exact=release_exact) for p0 in range(0, max(P, 1), BLOCK)]
    return PairFit(*(x[0] if len(outs) == 1 else np.concatenate(x)
                     for x in zip(*outs, strict=True)))


def _fit_block(wx: np.ndarray, wy: np.ndarray, v: np.ndarray, ex: np.ndarray,
                  ey: np.ndarray, ez: np.ndarray, mux: np.ndarray, muy: np.ndarray,
                  muz: np.ndarray, rho: np.ndarray, lam: np.ndarray, sin: np.ndarray,
                  cos: np.ndarray, cap: float | None = None, release_exact: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``fit_pairs`` for one block of pairs: (residuals, angle, residual, coeffs) as in
    ``PairFit``.

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
    step = max(1, CHUNK // H)
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
    kappa = spec.TRANSLATION_PRIOR / (1.0 + sin * sin)[None, :] / (lam * lam)[:, None]  # (P, A)
    quirk = cap is not None and release_exact
    tau0 = (spec.SCALE_PRIOR / math.sqrt(spec.TRANSLATION_PRIOR)) * sin if quirk else np.zeros(A)
    res, a0s, taus = _min_residual(
        yq[:, 0, 0, None] + qf[..., 0], yq[:, 0, 1, None] + qf[..., 1],
        yq[:, 1, 1, None] + qf[..., 2], qf[..., 3], qf[..., 4], qf[..., 5], kappa, tau0, cap)
    residuals = res * (lam * lam)[:, None]
    if cap is None:
        residuals += spec.SCALE_PRIOR**2
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
        coeffs[:, 1] += spec.SCALE_PRIOR / math.sqrt(spec.TRANSLATION_PRIOR)
    coeffs[:, 4:] = coef_b
    return residuals, best, res_best, coeffs


def _min_residual(tgg: np.ndarray, tgh: np.ndarray, thh: np.ndarray, tgt: np.ndarray,
                  tht: np.ndarray, ttt: np.ndarray, kappa: np.ndarray, tau0: np.ndarray,
                  cap: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    a0 = np.full_like(tau, cap)
    return res, a0, tau
