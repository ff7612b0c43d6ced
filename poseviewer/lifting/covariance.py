"""The posterior joint covariances of a fit (``joint_cov``) and the noise its own residual
gives (``fit_noise``): numpy, float64.

The posterior covariance of the basis coefficients given the angle and the scale does not
depend on the 2D joints; ``joint_cov`` gives, per (visibility, component, angle), the 3 x 3
covariance of every joint of the (blended, centred) pose in the model's millimetres;
``fit.lift`` scales it to the output's mm^2 with the noise of ``fit_noise``. The elevation
grid's covariances (a tilted camera) are ``elevation.joint_cov``.
"""

from __future__ import annotations

import numpy as np

from poseviewer.lifting import spec
from poseviewer.lifting.params import ModelArrays

#: Triples per block of ``joint_cov``.
BLOCK = 96


#: Degrees of freedom below which ``fit_noise`` does not go (a Student-t with <= 2 has no
#: covariance; only people with few visible joints come near it).
MIN_NOISE_DOF = 3.0


def fit_noise(rss: np.ndarray, n_obs: np.ndarray, fitted: np.ndarray, lam: np.ndarray,
              scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The noise of one fit estimated from its own 2D residual, for the joint covariances.

    ``rss`` the sum of squared differences between the fit's projection and the visible
    normalised 2D joints, ``n_obs`` the number of observed coordinates (2 x visible joints),
    ``fitted`` the effective number of fitted parameters (``joint_cov``),
    ``lam`` the component's data weight lambda_d and ``scale`` its a_0 (all broadcast).
    With the noise variance unknown (the release's 1 / lambda_d^2 is a weight, not a
    measured noise) and estimated as rss / (s^2 dof) in model mm^2, dof = n_obs - fitted
    (at least ``MIN_NOISE_DOF``), the posterior of the pose is a Student-t with dof degrees
    of freedom. Returns (the factor on ``joint_cov``'s covariance (computed with 1 /
    lambda_d^2): the estimated variance over 1 / lambda_d^2, at least 1 (never below the
    model's own noise), times dof / (dof - 2), the t's covariance over its scale matrix;
    dof).
    """
    dof = np.maximum(n_obs - fitted, MIN_NOISE_DOF)
    ratio = np.maximum(rss * (lam * lam) / ((scale * scale) * dof), 1.0)
    return ratio * dof / (dof - 2.0), dof


def fit_noise_terms(cov: np.ndarray, fitted: np.ndarray, n_obs: np.ndarray, lam: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``fit_noise`` rearranged for the fit, from what does not depend on the 2D joints
    (any leading shape (..., K); ``lam`` (K,)).

    With dof = max(n_obs - fitted, ``MIN_NOISE_DOF``), the scaled covariance of a fit is
    ``cov x fit_noise(...)[0] x cov_scale x (g s)^2`` (g the size factor, s the scale)
    = ``cov_t x cov_scale x g^2 x max(rss q, s^2)``. Returns (cov_t = cov x dof /
    (dof - 2) (..., K, 17, 3, 3), (q = lambda_d^2 / dof, dof) (..., K, 2))."""
    dof = np.maximum(n_obs - fitted, MIN_NOISE_DOF)
    cov_t = cov * (dof / (dof - 2.0))[..., None, None, None]
    return cov_t, np.stack([lam * lam / dof, dof], -1)


def joint_cov(arrays: ModelArrays, vis: np.ndarray, comp: np.ndarray, angle: np.ndarray,
              fitted: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Posterior 3 x 3 covariance of every joint, (P, 17, 3, 3), for P triples (visibility
    ``vis`` (P, J) bool of the observed slots ``spec.OBS_SLOTS``, component ``comp`` (P,),
    yaw index
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
    the same way and added. Solved in blocks of ``BLOCK`` triples.

    ``fitted`` True also returns (P,) the effective number of fitted parameters: the trace
    of the hat matrix of the data rows (D t) (D^T D + diag(rho, kappa))^-1 (D t)^T, which
    ``lift`` subtracts from the number of observed coordinates for the degrees of freedom
    of its noise estimate (``fit_noise``).
    """
    a = arrays
    P = len(comp)
    got = [_joint_cov_block(a.ex, a.ey, a.ez, a.e, a.rho, a.lam, spec.SIN, spec.COS,
                            vis[p0 : p0 + BLOCK], spec.OBS_SLOTS, comp[p0 : p0 + BLOCK],
                            angle[p0 : p0 + BLOCK], fitted=fitted)
           for p0 in range(0, max(P, 1), BLOCK)]
    if not fitted:
        return got[0] if len(got) == 1 else np.concatenate(got)
    cov, fit_n = (x[0] if len(got) == 1 else np.concatenate(x) for x in zip(*got, strict=True))
    return cov, fit_n


def _joint_cov_block(ex: np.ndarray, ey: np.ndarray, ez: np.ndarray, e: np.ndarray,
                  rho: np.ndarray, lam: np.ndarray, sin: np.ndarray, cos: np.ndarray,
                  vis: np.ndarray, obs: np.ndarray, comp: np.ndarray, angle: np.ndarray,
                  fitted: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``joint_cov`` for one block of triples.

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
    diag[:, B] += spec.TRANSLATION_PRIOR / (1.0 + s * s) / lam2
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
    d[:, 0, obs] = d[:, 2, obs] = 1.0 - v * (1.0 - 1.0 / (1.0 + spec.BLEND_WEIGHT))
    g *= d[:, :, None]
    g = g.reshape(-1, nj) @ (np.eye(nj) - 1.0 / nj)  # centring
    gk = g.reshape(P, 3, B + 1, nj).transpose(0, 2, 1, 3).reshape(P, B + 1, 3 * nj)
    lt = np.linalg.cholesky(prec)
    if fitted:  # the data rows as further right-hand sides: trace of the hat matrix
        gk = np.concatenate([gk, dmat.swapaxes(1, 2)], -1)
    y = np.linalg.solve(lt, gk)  # lt lower triangular
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
