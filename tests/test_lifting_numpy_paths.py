"""The numpy paths of the lifting (``solve._fit_pairs_np``, ``operators._joint_cov_np``, used
on the CPU) against the batched torch paths, on random inputs with many visibility
patterns, the capped refit in both modes included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poseviewer.lifting import operators, solve
from poseviewer.result import SCALE_CAP

pytestmark = pytest.mark.shared


def _pairs(model, rng: np.random.Generator, n: int) -> list[torch.Tensor]:
    """``fit_pairs`` arguments for n random people x every component (visibility patterns
    with 5 to 14 visible joints, some shared by several people)."""
    K = model.num_components
    vis = np.zeros((n, 14), dtype=bool)
    for i in range(n):
        vis[i, rng.choice(14, size=rng.integers(5, 15), replace=False)] = True
    vis[n // 2 :: 3] = vis[0]
    wn = rng.normal(size=(n, 14, 2)) * rng.uniform(0.2, 2.0, size=(n, 1, 1)) * vis[..., None]
    pn = torch.arange(n).repeat_interleave(K)
    pk = torch.arange(K).repeat(n)
    wt, vf = torch.from_numpy(wn), torch.from_numpy(vis.astype(np.float64))
    return [wt[pn, :, 0], wt[pn, :, 1], vf[pn], model._ex[pk], model._ey[pk], model._ez[pk],
            model._mux[pk], model._muy[pk], model._muz[pk], model._rho[pk], model._lam[pk],
            model._sin, model._cos]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / (1.0 + b.abs())).max())


@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_fit_pairs_numpy_equals_torch(model, n: int) -> None:
    rng = np.random.default_rng(n)
    args = _pairs(model, rng, n)
    for cap, exact in [(None, False), (SCALE_CAP, False), (SCALE_CAP, True)]:
        want = solve._fit_pairs_torch(*args, cap=cap, release_exact=exact)
        got = solve.PairFit(*(torch.from_numpy(x) for x in solve._fit_pairs_np(
            *(a.numpy() for a in args), cap=cap, release_exact=exact)))
        assert torch.equal(got.angle, want.angle)
        for name in ("residuals", "residual", "coeffs"):
            assert _rel(getattr(got, name), getattr(want, name)) < 1e-9, (name, cap, exact)
        # the public entry point (blocks of NUMPY_MAX_PAIRS on the CPU) gives the same
        pub = solve.fit_pairs(*args, cap=cap, release_exact=exact)
        assert torch.equal(pub.angle, want.angle)
        assert _rel(pub.coeffs, want.coeffs) < 1e-9


def test_fit_pairs_numpy_without_half_period(model) -> None:
    """Angles that are not symmetric under t -> t + pi: every angle factorised."""
    rng = np.random.default_rng(5)
    args = _pairs(model, rng, 3)
    theta = torch.from_numpy(np.sort(rng.uniform(0.0, 2.0 * np.pi, 37)))
    args[-2:] = [torch.sin(theta), torch.cos(theta)]
    want = solve._fit_pairs_torch(*args)
    got = solve._fit_pairs_np(*(a.numpy() for a in args))
    np.testing.assert_array_equal(got[1], want.angle.numpy())
    assert _rel(torch.from_numpy(got[0]), want.residuals) < 1e-9
    assert _rel(torch.from_numpy(got[3]), want.coeffs) < 1e-9


@pytest.mark.parametrize("n", [1, 5, 40])
def test_joint_cov_numpy_equals_torch(model, n: int) -> None:
    rng = np.random.default_rng(10 + n)
    K = model.num_components
    vis = rng.random((n * K, 14)) < rng.uniform(0.4, 1.0, size=(n * K, 1))
    comp = torch.arange(K).repeat(n)
    angle = torch.from_numpy(rng.integers(0, solve.NUM_ANGLES, n * K))
    args = (model._ex, model._ey, model._ez, model.e, model._rho, model._lam, model._sin,
            model._cos, torch.from_numpy(vis), model._obs, comp, angle)
    want = operators._joint_cov_torch(*args)
    got = torch.from_numpy(operators._joint_cov_np(*(a.numpy() for a in args)))
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) < 1e-9 * scale
    assert torch.equal(got, got.mT)
    pub = operators.joint_cov(*args)
    assert pub.shape == want.shape and pub.is_contiguous()
    assert float((pub - want).abs().max()) < 1e-9 * scale
    # the effective numbers of fitted parameters agree too, and lie between 0 and the
    # number of observed coordinates
    _, fit_t = operators._joint_cov_torch(*args, fitted=True)
    _, fit_np = operators._joint_cov_np(*(a.numpy() for a in args), fitted=True)
    _, fit_pub = operators.joint_cov(*args, fitted=True)
    np.testing.assert_allclose(fit_np, fit_t.numpy(), rtol=1e-9)
    np.testing.assert_allclose(fit_pub.numpy(), fit_t.numpy(), rtol=1e-9)
    assert (fit_np > 0).all() and (fit_np < 2 * vis.sum(1)).all()


def test_fit_noise_terms_rearrange_fit_noise() -> None:
    """The fast path's scaled covariance cov_t x g^2 x max(rss q, s^2) (``fit_noise_terms``)
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
    ratio, dof = solve.fit_noise(torch.from_numpy(rss), torch.from_numpy(n_obs),
                                 torch.from_numpy(fitted), torch.from_numpy(lam),
                                 torch.from_numpy(s))
    assert (ratio.numpy() > dof.numpy() / (dof.numpy() - 2.0) * 1.01).any()  # estimated
    assert np.isclose(ratio.numpy(), dof.numpy() / (dof.numpy() - 2.0)).any()  # floor
    assert (dof.numpy() == solve.MIN_NOISE_DOF).any()
    want = cov * (ratio.numpy() * (g * s) ** 2)[..., None, None, None]
    cov_t, qd = solve.fit_noise_terms(cov, fitted, n_obs, lam)
    got = cov_t * (g * g * np.maximum(rss * qd[..., 0], s * s))[..., None, None, None]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(qd[..., 1], dof.numpy())
