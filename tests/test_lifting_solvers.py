"""The lifting's two solvers of spec steps 2-3 agree: the direct solve (``direct.fit_pairs``,
for patterns without operators) against the prepared per-pattern operators
(``cache.build``, ``cache.capped_ops``) and against numpy's lstsq on the spec's system, on
random inputs with many visibility patterns, the capped refit in both modes included; the
joint covariances (``covariance.joint_cov``) in blocks; ``fit_noise_terms``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poseviewer.lifting import cache, covariance, direct, spec
from poseviewer.result import SCALE_CAP

pytestmark = pytest.mark.shared


def _people(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 29) u = [w_x, w_y, 1] (zero where invisible) and (n, 14) visibility: 5 to 14
    visible joints, some patterns shared by several people."""
    vis = np.zeros((n, 14), dtype=bool)
    for i in range(n):
        vis[i, rng.choice(14, size=rng.integers(5, 15), replace=False)] = True
    vis[n // 2 :: 3] = vis[0]
    wn = rng.normal(size=(n, 2, 14)) * rng.uniform(0.2, 2.0, size=(n, 1, 1)) * vis[:, None]
    return np.concatenate([wn.reshape(n, 28), np.ones((n, 1))], 1), vis


def _pairs(arrays, u: np.ndarray, vis: np.ndarray) -> list[np.ndarray]:
    """``fit_pairs`` arguments for every person x component."""
    K = arrays.num_components
    pn, pk = np.repeat(np.arange(len(u)), K), np.tile(np.arange(K), len(u))
    a = arrays
    return [u[pn, :14], u[pn, 14:28], vis[pn].astype(np.float64), a.ex[pk], a.ey[pk],
            a.ez[pk], a.mux[pk], a.muy[pk], a.muz[pk], a.rho[pk], a.lam[pk]]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a - b) / (1.0 + np.abs(b))).max())


@pytest.mark.parametrize("n", [1, 7, 40])
def test_direct_solve_equals_the_prepared_operators(model, n: int) -> None:
    """Per person and component: every angle's residual, the chosen angle and its
    coefficients of the direct solve equal the pattern's operators applied to u (uncapped,
    and with the scale capped in both modes); 40 people x 3 components span two blocks."""
    rng = np.random.default_rng(n)
    arrays = model.arrays
    K = arrays.num_components
    u, vis = _people(rng, n)
    args = _pairs(arrays, u, vis)
    ops = {}
    for cap, exact in [(None, False), (SCALE_CAP, False), (SCALE_CAP, True)]:
        got = direct.fit_pairs(*args, cap=cap, release_exact=exact)
        for i in range(n):
            key = vis[i].tobytes()
            op = ops.get(key) or ops.setdefault(key, cache.build(arrays, vis[i]))
            feats = u[i, op.full_i] * u[i, op.full_j]
            if cap is None:
                res = (feats @ op.res_packed).reshape(K, -1)
                coef = op.coef
            else:
                forms, coef = cache.capped_ops(op, arrays, exact)
                res = (forms @ u[i]) @ u[i]
            for k in range(K):
                p = i * K + k
                assert _rel(got.residuals[p], res[k]) < 1e-9, (cap, exact)
                assert got.angle[p] == int(np.argmin(res[k]))
                assert _rel(got.coeffs[p], coef[k, got.angle[p]] @ u[i]) < 1e-8
    assert _rel(direct.fit_pairs(*args).coeffs, np.concatenate(
        [direct.fit_pairs(*(x[p : p + 1] for x in args)).coeffs for p in range(n * K)])) < 1e-9


def _spec_residual(u: np.ndarray, vis: np.ndarray, mu, e, sig, theta: float) -> float:
    """lstsq on the spec's 80 x 29 system for one person, component and angle."""
    w = np.zeros((2, 17))
    w[:, spec.OBS_SLOTS] = u[:28].reshape(2, 14)
    v = np.zeros(17)
    v[spec.OBS_SLOTS] = vis
    big = np.zeros((29, 3, 17))
    big[0] = mu
    big[1, 0] = big[3, 0] = 1.0
    big[2, 1] = 1.0
    big[4:] = e
    s, c = math.sin(theta), math.cos(theta)
    p = (spec.CAMERA @ np.array([[s, -c, 0], [c, s, 0], [0, 0, 1.0]]).T)[:2]
    lam = sig[-1]
    vv = np.r_[v, v]
    data = np.stack([(p @ big[i]).reshape(-1) for i in range(29)], 1) * lam * vv[:, None]
    reg = np.diag(np.r_[0.0, 1e-5, 1e-5, 1e-5, 5.2 * sig[:-1]])
    a_mat = np.vstack([data, reg])
    b = np.r_[lam * vv * w.reshape(-1), -0.003, np.zeros(28)]
    a, *_ = np.linalg.lstsq(a_mat, b, rcond=None)
    return float(np.sum((a_mat @ a - b) ** 2))


def test_direct_solve_without_half_period(model) -> None:
    """Angles that are not symmetric under t -> t + pi (every angle factorised): the
    residuals equal lstsq on the spec's system at those angles."""
    rng = np.random.default_rng(5)
    u, vis = _people(rng, 3)
    theta = np.sort(rng.uniform(0.0, 2.0 * np.pi, 37))
    got = direct.fit_pairs(*_pairs(model.arrays, u, vis), np.sin(theta), np.cos(theta))
    K = model.num_components
    for i in range(3):
        for k in range(K):
            for j in (0, 11, 36):
                want = _spec_residual(u[i], vis[i], model.mu[k], model.e[k], model.sigma[k],
                                      theta[j])
                assert got.residuals[i * K + k, j] == pytest.approx(want, rel=1e-9)
            assert got.angle[i * K + k] == int(np.argmin(got.residuals[i * K + k]))


def test_joint_cov_blocks_and_shape(model) -> None:
    """``joint_cov`` in blocks of ``BLOCK`` triples equals one triple at a time; symmetric
    positive definite; the fitted parameters lie between 0 and the observed coordinates."""
    rng = np.random.default_rng(11)
    K = model.num_components
    P = covariance.BLOCK + 7
    vis = rng.random((P, 14)) < rng.uniform(0.4, 1.0, size=(P, 1))
    comp = np.tile(np.arange(K), P)[:P]
    angle = rng.integers(0, spec.NUM_ANGLES, P)
    cov, fitted = covariance.joint_cov(model.arrays, vis, comp, angle, fitted=True)
    assert cov.shape == (P, 17, 3, 3) and fitted.shape == (P,)
    for p in (0, covariance.BLOCK - 1, covariance.BLOCK, P - 1):
        one, f1 = covariance.joint_cov(model.arrays, vis[p : p + 1], comp[p : p + 1],
                                       angle[p : p + 1], fitted=True)
        np.testing.assert_allclose(one[0], cov[p], rtol=1e-12, atol=0)
        assert f1[0] == pytest.approx(fitted[p], rel=1e-12)
    np.testing.assert_array_equal(cov, cov.swapaxes(-1, -2))
    assert (np.linalg.eigvalsh(cov) > 0).all()
    assert (fitted > 0).all() and (fitted < 2 * vis.sum(1)).all()
    np.testing.assert_allclose(covariance.joint_cov(model.arrays, vis, comp, angle), cov,
                               rtol=1e-12, atol=1e-12)


def test_fit_noise_terms_rearrange_fit_noise() -> None:
    """The fit's scaled covariance cov_t x g^2 x max(rss q, s^2) (``fit_noise_terms``)
    equals the definition cov x fit_noise(...)[0] x (g s)^2, on both sides of the floor
    (ratio 1) and down to the minimum dof; the dof are the same."""
    rng = np.random.default_rng(3)
    n, K = 50, 3
    lam = rng.uniform(0.05, 0.08, K)
    cov = rng.normal(size=(n, K, 17, 3, 3))
    fitted = rng.uniform(5.0, 27.0, (n, K))
    n_obs = 2.0 * rng.integers(5, 15, (n, 1)).astype(np.float64)
    s = -rng.uniform(0.5, 3.0, (n, K))
    g = rng.uniform(0.1, 10.0, (n, K))
    rss = rng.uniform(0.0, 2.0, (n, K)) * s * s / (lam * lam) * 30.0
    ratio, dof = covariance.fit_noise(rss, n_obs, fitted, lam, s)
    assert (ratio > dof / (dof - 2.0) * 1.01).any()  # estimated
    assert np.isclose(ratio, dof / (dof - 2.0)).any()  # floor
    assert (dof == covariance.MIN_NOISE_DOF).any()
    want = cov * (ratio * (g * s) ** 2)[..., None, None, None]
    cov_t, qd = covariance.fit_noise_terms(cov, fitted, n_obs, lam)
    got = cov_t * (g * g * np.maximum(rss * qd[..., 0], s * s))[..., None, None, None]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(qd[..., 1], dof)
