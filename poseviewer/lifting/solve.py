"""The batched lifting maths (``../shared/docs/lifting-spec.md``), solved in torch float64.

Every person x component x yaw angle is solved at once. The release solves, per angle, an
80 x 29 regularised least-squares problem with one ``lstsq`` call; we solve exactly the same
problem, reorganised so that no ill-conditioned system is ever formed and the per-angle work
is one small, well-conditioned SPD elimination:

1. **Translations, analytically.** After projection the three translation columns E_1, E_2,
   E_3 only move image x, through tau = sin t (a_1 + a_3) + cos t a_2. Minimising their prior
   1e-10 (a_1^2 + a_2^2 + a_3^2) (or, for the capped refit, the quirky
   1e-10 ((a_1 + 300)^2 + a_2^2 + a_3^2)) subject to that sum gives the prior
   eps^2 (tau - tau0)^2 with eps^2 = 1e-10 / (1 + sin^2 t), tau0 = 0 (or -300 sin t), and
   (a_1, a_2, a_3) = (tau - tau0) (s, c, s) / (1 + s^2) (+ (-300, 0, 0) when capped).
   Minimising over tau in turn weights the visible x residuals by W = I - gamma v v^T,
   gamma = 1 / (n_v + kappa), kappa = eps^2 / lambda_d^2. These are the directions that make
   the release's system ill-conditioned (condition number up to 1.6e7); here they never
   reach a matrix.
2. **Basis coefficients, in the dual.** With the diagonal prior rho_i = (5.2 sigma_i /
   lambda_d)^2 the minimum over the B basis coefficients of a data residual q is
   q^T K^{-1} q, K = I + D R D^T (R = diag(1 / rho), D the masked, W^{1/2}-weighted data
   rows): SPD with eigenvalues >= 1. Its image-y block does not depend on the angle, so it is
   eliminated once per person and component (posterior covariance
   R~ = (diag(rho) + Ez^T Ez)^{-1}); what remains per angle is the 14 x 14 x-block Schur
   complement S(t) = I + W^{1/2} (s^2 Mxx + sc Mxy + c^2 Myy) W^{1/2}, also >= I.
3. **The scale a_0** has no prior: minimising over it is a 2 x 2 Schur complement of the
   quadratic forms of the right-hand side g and the a_0 column h.

The per-angle step is a pivot-free Gaussian elimination of the augmented matrix
[[S, g, h], [g^T, 0], [h^T, 0]] (batch last, so every update is one vectorised rank-1 op);
S >= I makes it as stable as a Cholesky factorisation. Only at the chosen angle are the
coefficients themselves recovered (one small solve per person and component).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Number of yaw angles searched (theta_j = 2 pi j / 100).
NUM_ANGLES = 100
#: Prior weight of the three translation coefficients (1e-5 squared).
TRANSLATION_PRIOR = 1e-10
#: Right-hand side of the first prior row (the scale prior, -0.003).
SCALE_PRIOR = -0.003
#: Scale cap of step 3.
SCALE_CAP = -0.001
#: Multiplier of sigma in the regulariser weights.
SIGMA_FACTOR = 5.2
#: Weight of the observation in the blend of step 5.2.
BLEND_WEIGHT = 1.55
#: Final size normalisation of step 5.3.
OUTPUT_SIZE = 0.97 * 1174.88312988
#: Minimum number of visible joints to lift a person.
MIN_VISIBLE = 5
#: Batch elements (pairs x angles) per elimination chunk: keeps the working set in cache.
CHUNK = 2048


@dataclass
class PairFit:
    """Best-angle fit of a flat batch of (person, component) pairs."""

    residuals: Tensor  # (P, A) full ||A a - b||^2 per angle
    angle: Tensor  # (P,) int64 index of the chosen angle
    residual: Tensor  # (P,) residual at the chosen angle (not yet halved)
    coeffs: Tensor  # (P, 4 + B) a_0 .. a_{3+B} (a_0 = scale), not divided by the scale


def angles(device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """(theta, sin theta, cos theta), each (100,) float64."""
    theta = 2.0 * math.pi * torch.arange(NUM_ANGLES, dtype=torch.float64, device=device)
    theta = theta / NUM_ANGLES
    return theta, torch.sin(theta), torch.cos(theta)


def _eliminate(aug: Tensor, n: int) -> Tensor:
    """Pivot-free Gaussian elimination of the first ``n`` rows of ``aug`` (M, M, batch) in place.

    For aug = [[S, R], [R^T, 0]] with S SPD this leaves -R^T S^{-1} R in the trailing block.
    """
    for k in range(n):
        row = aug[k, k + 1 :] / aug[k, k]
        aug[k + 1 :, k + 1 :].addcmul_(aug[k + 1 :, k, None], row[None], value=-1.0)
    return aug[n:, n:]


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
) -> PairFit:
    """Fit P (person, component) pairs at every angle and keep the best angle of each.

    Per pair: ``wx, wy, vis`` (P, J) normalised observed joints (zero where invisible) and
    visibility as 0/1 float64; ``ex, ey, ez`` (P, J, B) basis rows at the observed joints;
    ``mux, muy, muz`` (P, J) mean pose rows; ``rho`` (P, B) = (5.2 sigma_i / lambda_d)^2;
    ``lam`` (P,) = lambda_d. ``sin, cos`` (A,). ``cap``: None for step 2, or the fixed
    scale of the refit of step 3 (with the release's right-hand-side quirk).
    """
    P, J, B = ex.shape
    A = sin.shape[0]
    dt, dev = wx.dtype, wx.device
    v = vis
    exv, eyv, ezv = ex * v[..., None], ey * v[..., None], ez * v[..., None]

    # y-block once per pair: posterior covariance of the basis coefficients given image y.
    rinv = torch.diag_embed(rho) + ezv.mT @ ezv
    rt = torch.cholesky_inverse(torch.linalg.cholesky(rinv))  # (P, B, B)
    ex_rt = exv @ rt
    ey_rt = eyv @ rt
    mxx = ex_rt @ exv.mT
    mxy = ex_rt @ eyv.mT
    mxy = mxy + mxy.mT
    myy = ey_rt @ eyv.mT

    gy = wy * v
    hy = -muz * v  # the a_0 column of the y rows: pred_y = -a_0 mu_z - ...
    dg = -(ezv.mT @ gy[..., None])[..., 0]  # D_y^T g_y (P, B)
    dh = -(ezv.mT @ hy[..., None])[..., 0]
    bg = (rt @ dg[..., None])[..., 0]  # posterior means given the y rows
    bh = (rt @ dh[..., None])[..., 0]
    ygg = (gy * gy).sum(-1) - (dg * bg).sum(-1)
    ygh = (gy * hy).sum(-1) - (dg * bh).sum(-1)
    yhh = (hy * hy).sum(-1) - (dh * bh).sum(-1)
    exbg = (exv @ bg[..., None])[..., 0]
    eybg = (eyv @ bg[..., None])[..., 0]
    exbh = (exv @ bh[..., None])[..., 0]
    eybh = (eyv @ bh[..., None])[..., 0]

    # Translation elimination: W = I - gamma v v^T, W^{1/2} = I - beta v v^T.
    nv = v.sum(-1)  # (P,)
    s2 = sin * sin
    kappa = TRANSLATION_PRIOR / (1.0 + s2)[None, :] / (lam * lam)[:, None]  # (P, A)
    gamma = 1.0 / (nv[:, None] + kappa)
    beta = (1.0 - torch.sqrt(kappa / (nv[:, None] + kappa))) / nv[:, None]

    wxv = wx * v
    if cap is not None:
        # The first prior row keeps -0.003 while it now belongs to E_1: tau0 = -300 sin t.
        tau0 = (SCALE_PRIOR / math.sqrt(TRANSLATION_PRIOR)) * sin  # (A,)
    else:
        tau0 = torch.zeros_like(sin)

    residuals = torch.empty(P, A, dtype=dt, device=dev)
    # Pairs per chunk so that (pairs x angles) stays around CHUNK.
    step = max(1, CHUNK // A)
    eye = torch.eye(J, dtype=dt, device=dev)
    for p0 in range(0, P, step):
        sl = slice(p0, min(P, p0 + step))
        n = sl.stop - sl.start
        vv = v[sl]
        # x-side right-hand sides per angle (n, A, J)
        gx = (wxv[sl, None, :] - tau0[None, :, None] * vv[:, None, :]
              - sin[None, :, None] * exbg[sl, None, :] - cos[None, :, None] * eybg[sl, None, :])
        hx = (vv[:, None, :] * (sin[None, :, None] * mux[sl, None, :]
                                + cos[None, :, None] * muy[sl, None, :])
              - sin[None, :, None] * exbh[sl, None, :] - cos[None, :, None] * eybh[sl, None, :])
        bt = beta[sl][..., None]  # (n, A, 1)
        gx = gx - bt * vv[:, None, :] * (gx * vv[:, None, :]).sum(-1, keepdim=True)
        hx = hx - bt * vv[:, None, :] * (hx * vv[:, None, :]).sum(-1, keepdim=True)
        # M(t) (n, A, J, J), then W^{1/2} M W^{1/2} = M - b v u^T - b u v^T + b^2 (v.u) v v^T
        m = (s2[None, :, None, None] * mxx[sl, None]
             + (sin * cos)[None, :, None, None] * mxy[sl, None]
             + (cos * cos)[None, :, None, None] * myy[sl, None])
        mv = m @ vv[:, None, :, None]  # (n, A, J, 1)
        vmv = (vv[:, None, :, None] * mv).sum(-2, keepdim=True)  # (n, A, 1, 1)
        vcol = vv[:, None, :, None]
        b4 = bt[..., None]
        m = (m - b4 * (vcol @ mv.mT) - b4 * (mv @ vcol.mT)
             + (b4 * b4 * vmv) * (vcol @ vcol.mT))
        aug = torch.zeros(J + 2, J + 2, n, A, dtype=dt, device=dev)
        aug[:J, :J] = (m + eye).permute(2, 3, 0, 1)
        aug[:J, J] = gx.permute(2, 0, 1)
        aug[:J, J + 1] = hx.permute(2, 0, 1)
        aug[J, :J] = aug[:J, J]
        aug[J + 1, :J] = aug[:J, J + 1]
        q = -_eliminate(aug.view(J + 2, J + 2, n * A), J).view(2, 2, n, A)
        tgg = ygg[sl, None] + q[0, 0]
        tgh = ygh[sl, None] + q[0, 1]
        thh = yhh[sl, None] + q[1, 1]
        lam2 = (lam[sl] * lam[sl])[:, None]
        if cap is None:
            residuals[sl] = lam2 * (tgg - tgh * tgh / thh) + SCALE_PRIOR**2
        else:
            residuals[sl] = lam2 * (tgg - 2.0 * cap * tgh + cap * cap * thh)

    best = torch.argmin(residuals, dim=1)  # first minimum on ties
    res_best = residuals.gather(1, best[:, None])[:, 0]

    # Coefficients at the chosen angle only.
    s, c = sin[best], cos[best]  # (P,)
    bb = beta.gather(1, best[:, None])  # (P, 1)
    gb = gamma.gather(1, best[:, None])[:, 0]
    t0 = tau0[best]
    dx = s[:, None, None] * exv + c[:, None, None] * eyv  # (P, J, B)
    mxb = v * (s[:, None] * mux + c[:, None] * muy)  # a_0 column, x rows (P, J)
    gxb = wxv - t0[:, None] * v - (dx @ bg[..., None])[..., 0]
    hxb = mxb - (dx @ bh[..., None])[..., 0]

    def whalf(x: Tensor) -> Tensor:
        return x - bb * v * (x * v).sum(-1, keepdim=True)

    gxb, hxb = whalf(gxb), whalf(hxb)
    mb = (s * s)[:, None, None] * mxx + (s * c)[:, None, None] * mxy + (c * c)[:, None, None] * myy
    mvb = (mb @ v[..., None])[..., 0]
    vmvb = (v * mvb).sum(-1)[:, None, None]
    b3 = bb[..., None]
    sb = (mb - b3 * v[..., :, None] * mvb[..., None, :] - b3 * mvb[..., :, None] * v[..., None, :]
          + b3 * b3 * vmvb * v[..., :, None] * v[..., None, :]) + eye
    rhs = torch.stack([gxb, hxb], dim=-1)  # (P, J, 2)
    sol = torch.linalg.solve(sb, rhs)  # (P, J, 2)
    if cap is None:
        tgh = ygh + (hxb * sol[..., 0]).sum(-1)
        thh = yhh + (hxb * sol[..., 1]).sum(-1)
        a0 = tgh / thh
    else:
        a0 = torch.full((P,), cap, dtype=dt, device=dev)
    z = sol[..., 0] - a0[:, None] * sol[..., 1]  # S^{-1} q^
    wz = whalf(z)
    coef_b = (bg - a0[:, None] * bh) + (rt @ (dx.mT @ wz[..., None]))[..., 0]
    # Translation: tau' = gamma v.(x residual), split over (a_1, a_2, a_3).
    rx = wxv - t0[:, None] * v - a0[:, None] * mxb - (dx @ coef_b[..., None])[..., 0]
    taup = gb * (v * rx).sum(-1)
    den = 1.0 + s * s
    a1 = taup * s / den
    a2 = taup * c / den
    a3 = a1.clone()
    if cap is not None:
        a1 = a1 + SCALE_PRIOR / math.sqrt(TRANSLATION_PRIOR)
    coeffs = torch.cat([a0[:, None], a1[:, None], a2[:, None], a3[:, None], coef_b], dim=1)
    return PairFit(residuals, best, res_best, coeffs)
