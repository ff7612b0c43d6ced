"""The mixture-of-PPCA trainer: EM behaviour, parameter recovery, preprocessing, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from poseviewer import train3d as T
from poseviewer.skeleton import H36M17

HEAD, R_ANKLE, L_ANKLE = (H36M17.index(n) for n in ("head", "right_ankle", "left_ankle"))
R_HIP, L_HIP = H36M17.index("right_hip"), H36M17.index("left_hip")
R_SHOULDER, L_SHOULDER = H36M17.index("right_shoulder"), H36M17.index("left_shoulder")
L_ELBOW, L_WRIST, R_KNEE = (H36M17.index(n) for n in ("left_elbow", "left_wrist", "right_knee"))

# A hand-made standing skeleton (mm, z up, facing +y, person's right at +x), H36M-17 order.
_STAND = np.array([
    [0, 0, 1000], [130, 0, 1000], [130, 0, 550], [130, 0, 100],
    [-130, 0, 1000], [-130, 0, 550], [-130, 0, 100],
    [0, 0, 1230], [0, 0, 1480], [0, 20, 1590], [0, 0, 1700],
    [-150, 0, 1450], [-170, 0, 1170], [-180, 0, 920],
    [150, 0, 1450], [170, 0, 1170], [180, 0, 920],
], dtype=np.float64)


def _random_poses(n: int, seed: int = 0, yaw: bool = True) -> np.ndarray:
    """Plausible poses: the skeleton with smooth random limb offsets, yaw and translation."""
    rng = np.random.default_rng(seed)
    p = _STAND[None] + rng.normal(scale=40.0, size=(n, 17, 3))
    p[:, [L_ELBOW, L_WRIST], 1] += rng.normal(scale=200.0, size=(n, 1))  # left arm swings
    p[:, [R_KNEE, R_ANKLE], 1] += rng.normal(scale=150.0, size=(n, 1))  # right leg steps
    if yaw:
        p = T.rotate_z(p, rng.uniform(0, 2 * np.pi, n))
    return p + np.concatenate([rng.normal(scale=500, size=(n, 1, 2)), np.zeros((n, 1, 1))], 2)


def _sample_mppca(n: int, seed: int = 0, sep: float = 6.0):
    """Data from a known 2-component PPCA mixture in 10 dimensions (q = 2)."""
    rng = np.random.default_rng(seed)
    d, q = 10, 2
    means = np.stack([np.zeros(d), np.full(d, sep)])
    bases = np.stack([np.linalg.qr(rng.normal(size=(d, q)))[0] for _ in range(2)])
    stds = np.array([[3.0, 2.0], [2.5, 1.5]])
    noise = np.array([0.1, 0.2])
    weights = np.array([0.6, 0.4])
    comp = rng.choice(2, size=n, p=weights)
    lat = rng.normal(size=(n, q)) * stds[comp]
    y = means[comp] + np.einsum("ndq,nq->nd", bases[comp], lat)
    y += rng.normal(size=(n, d)) * np.sqrt(noise[comp])[:, None]
    return y, means, bases, stds**2 + noise[:, None], noise, weights


def test_em_log_likelihood_never_decreases() -> None:
    y, *_ = _sample_mppca(3000, sep=0.7)  # overlapping components: EM has work to do
    fit = T.fit_mppca(y, n_components=2, n_basis=2, seed=3, max_iter=60, tol=0.0,
                      progress=False)
    ll = np.array(fit.log_likelihood)
    assert len(ll) >= 5
    assert (np.diff(ll) >= -1e-9).all(), np.diff(ll).min()
    assert ll[-1] > ll[0] + 0.01


def test_em_reports_a_likelihood_drop_not_convergence(monkeypatch) -> None:
    """A broken M-step (here: means pushed away on the 3rd call) makes the log-likelihood
    drop; that is a warning and converged=False, not 'converged'."""
    y, *_ = _sample_mppca(2000, sep=0.7)
    real = T._m_step
    calls = []

    def broken(*args, **kwargs):
        fit = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            fit.means = fit.means + 5.0
        return fit

    monkeypatch.setattr(T, "_m_step", broken)
    with pytest.warns(RuntimeWarning, match="went down"):
        fit = T.fit_mppca(y, n_components=2, n_basis=2, seed=3, max_iter=60, tol=1e-6,
                          progress=False)
    assert not fit.converged and fit.decreased
    assert np.diff(fit.log_likelihood)[-1] < 0 and len(fit.log_likelihood) == 3
    # the healthy fit is not flagged
    monkeypatch.setattr(T, "_m_step", real)
    ok = T.fit_mppca(y, n_components=2, n_basis=2, seed=3, max_iter=60, progress=False)
    assert ok.converged and not ok.decreased


def test_em_recovers_known_mixture() -> None:
    y, means, bases, variances, noise, weights = _sample_mppca(6000, seed=1)
    fit = T.fit_mppca(y, n_components=2, n_basis=2, seed=0, progress=False)
    assert fit.converged
    # match components by mean
    order = np.argsort(fit.means[:, 0])
    np.testing.assert_allclose(fit.means[order], means, atol=0.15)
    np.testing.assert_allclose(fit.weights[order], weights, atol=0.03)
    np.testing.assert_allclose(fit.noise_var[order], noise, rtol=0.1)
    np.testing.assert_allclose(fit.variances[order], variances, rtol=0.1)
    for k in range(2):
        assert np.rad2deg(subspace_angles(fit.bases[order[k]], bases[k]).max()) < 3.0
        # orthonormal, sorted by decreasing variance
        np.testing.assert_allclose(fit.bases[k].T @ fit.bases[k], np.eye(2), atol=1e-10)
        assert (np.diff(fit.variances[k]) <= 0).all()


def test_em_is_deterministic_with_seed() -> None:
    y, *_ = _sample_mppca(800, seed=2)
    a = T.fit_mppca(y, 2, 2, seed=5, progress=False)
    b = T.fit_mppca(y, 2, 2, seed=5, progress=False)
    np.testing.assert_array_equal(a.means, b.means)
    assert a.log_likelihood == b.log_likelihood


def test_canonicalise_removes_yaw_and_translation() -> None:
    p = _random_poses(50, seed=4, yaw=False)
    canon = T.canonicalise(p)
    rng = np.random.default_rng(9)
    moved = T.rotate_z(p, rng.uniform(-np.pi, np.pi, len(p))) + rng.normal(size=(50, 1, 3)) * 300
    np.testing.assert_allclose(T.canonicalise(moved), canon, atol=1e-9)
    # zero joint mean, metric scale kept, right side +x, facing +y
    np.testing.assert_allclose(canon.mean(axis=1), 0.0, atol=1e-9)
    np.testing.assert_allclose(
        np.linalg.norm(canon[:, HEAD] - canon[:, R_ANKLE], axis=-1),
        np.linalg.norm(p[:, HEAD] - p[:, R_ANKLE], axis=-1),
    )
    right = canon[:, R_HIP] - canon[:, L_HIP] + canon[:, R_SHOULDER] - canon[:, L_SHOULDER]
    np.testing.assert_allclose(right[:, 1], 0.0, atol=1e-9)
    assert (right[:, 0] > 0).all()
    facing = np.cross([0.0, 0.0, 1.0], right)
    assert (facing[:, 1] > 0).all()


def test_mirror_swaps_sides_and_keeps_canonical() -> None:
    canon = T.canonicalise(_random_poses(10, seed=5))
    m = T.mirror(canon)
    # new right hip = old left hip
    np.testing.assert_allclose(m[:, R_HIP, 0], -canon[:, L_HIP, 0])
    np.testing.assert_allclose(T.canonicalise(m), m, atol=1e-9)
    np.testing.assert_allclose(T.mirror(m), canon)


def test_zero_mean_basis() -> None:
    q = T.zero_mean_basis()
    assert q.shape == (51, 48)
    np.testing.assert_allclose(q.T @ q, np.eye(48), atol=1e-12)
    np.testing.assert_allclose(q.reshape(3, 17, 48).sum(axis=1), 0.0, atol=1e-12)


def test_train_pose_model_parameters() -> None:
    poses = _random_poses(1500, seed=6)
    rep = T.train_pose_model(poses, n_components=2, n_basis=6, progress=False)
    mu, e, sigma = rep.params["mu"], rep.params["e"], rep.params["sigma"]
    assert mu.shape == (2, 3, 17) and e.shape == (2, 6, 3, 17) and sigma.shape == (2, 7)
    np.testing.assert_allclose(mu.sum(axis=-1), 0.0, atol=1e-8)  # zero joint-mean
    flat = e.reshape(2, 6, 51)
    for k in range(2):
        np.testing.assert_allclose(flat[k] @ flat[k].T, np.eye(6), atol=1e-10)
    # raw sigma: inverse standard deviations, increasing (variances decreasing), noise last
    raw = rep.params["sigma_raw"]
    assert (np.diff(raw[:, :6], axis=1) >= 0).all()
    assert (raw[:, 6] >= raw[:, 5]).all()
    np.testing.assert_allclose(1 / raw[:, :6] ** 2, rep.fit.variances[np.argsort(
        -rep.fit.weights, kind="stable")])
    # calibrated: basis weights scaled, one pooled data weight for every component
    np.testing.assert_allclose(sigma[:, :6], T.PRIOR_FACTOR * raw[:, :6])
    w = np.array(rep.meta["mixing_weights"])
    np.testing.assert_allclose(sigma[:, 6], T.DATA_FACTOR / np.sqrt((w / raw[:, 6] ** 2).sum()))
    # mirror augmentation makes the mixture's overall mean left-right symmetric
    perm = H36M17.flip_permutation()
    overall = np.einsum("k,kij->ij", rep.meta["mixing_weights"], mu)
    mirrored = overall[:, perm] * np.array([-1.0, 1, 1])[:, None]
    np.testing.assert_allclose(mirrored, overall, atol=1e-6)
    # the means stand upright, about the skeleton's height, facing +y (right hip at +x)
    assert (mu[:, 2, HEAD] - mu[:, 2, R_ANKLE] > 1400).all()
    assert (mu[:, 0, R_HIP] > 0).all()
    assert rep.meta["n_poses"] == 1500 and rep.meta["n_training_vectors"] == 3000
    # basis signs are fixed by a reference direction (mirror-symmetric vectors tie on
    # their largest entries, so "largest entry positive" would be arbitrary)
    ref = np.random.default_rng(12345).normal(size=51)
    assert (flat @ ref > 0).all()


def test_calibrate_sigma_by_hand() -> None:
    raw = np.array([[0.5, 0.1], [0.25, 0.05]])  # noise std 10 and 20
    w = np.array([0.75, 0.25])
    # pooled noise variance 0.75 * 100 + 0.25 * 400 = 175
    out = T.calibrate_sigma(raw, w, prior_factor=2.0, data_factor=3.0)
    np.testing.assert_allclose(out, [[1.0, 3 / np.sqrt(175)], [0.5, 3 / np.sqrt(175)]])
    out = T.calibrate_sigma(raw, w, 1.0, 2.0, pooled_noise=False)
    np.testing.assert_allclose(out, [[0.5, 0.2], [0.25, 0.1]])
    with pytest.raises(T.TrainingError, match="positive"):
        T.calibrate_sigma(raw, w, 0.0)


def test_degenerate_inputs() -> None:
    with pytest.raises(T.TrainingError, match="too few poses"):
        T.train_pose_model(_random_poses(20), progress=False)
    bad = _random_poses(500)
    bad[7, R_ANKLE, 1] = np.nan
    with pytest.raises(T.TrainingError, match="NaN"):
        T.train_pose_model(bad, progress=False)
    const = np.repeat(_STAND[None], 500, axis=0)
    with pytest.raises(T.TrainingError, match="identical"):
        T.train_pose_model(const, progress=False)
    with pytest.raises(T.TrainingError, match="shape"):
        T.train_pose_model(np.zeros((500, 14, 3)), progress=False)
    flat = _random_poses(500)
    # no left-right extent: facing undefined
    flat[:, [R_HIP, L_HIP, L_SHOULDER, R_SHOULDER], :2] = 0.0
    with pytest.raises(T.TrainingError, match="facing"):
        T.train_pose_model(flat, progress=False)
    with pytest.raises(T.TrainingError, match="basis"):
        T.fit_mppca(np.random.default_rng(0).normal(size=(500, 4)), 1, 4, progress=False)


def test_log_likelihood_is_the_mixture_density() -> None:
    """``log_likelihood`` against the mixture's density built densely: each component's
    covariance U diag(var) U^T + noise (I - U U^T) and scipy's Gaussian log-density."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    y, *_ = _sample_mppca(800, seed=4, sep=2.0)
    fit = T.fit_mppca(y, n_components=2, n_basis=2, seed=1, progress=False)
    held = _sample_mppca(50, seed=9, sep=2.0)[0]
    d = y.shape[1]
    dense = []
    for k in range(2):
        u = fit.bases[k]
        cov = u @ np.diag(fit.variances[k]) @ u.T + fit.noise_var[k] * (np.eye(d) - u @ u.T)
        dense.append(np.log(fit.weights[k])
                     + multivariate_normal(fit.means[k], cov).logpdf(held))
    np.testing.assert_allclose(T.log_likelihood(fit, held), logsumexp(dense, axis=0),
                               rtol=1e-10)
    # the training data's mean is the last EM log-likelihood (E-step of the final fit)
    assert T.log_likelihood(fit, y).mean() == pytest.approx(fit.log_likelihood[-1], abs=1e-6)


def test_pose_vectors_as_training_sees_them() -> None:
    p = _random_poses(6, seed=2)
    y = T.pose_vectors(p, mirror_augment=True)
    assert y.shape == (12, 48)
    q = T.zero_mean_basis()
    canon = T.canonicalise(p)
    np.testing.assert_allclose(y[:6] @ q.T, T.to_rows(canon), atol=1e-9)
    np.testing.assert_allclose(y[6:] @ q.T, T.to_rows(T.mirror(canon)), atol=1e-9)
    # with a size every pose has that total bone size; without mirrors only the poses
    ys = T.pose_vectors(p, mirror_augment=False, size=1000.0)
    assert ys.shape == (6, 48)
    np.testing.assert_allclose(T.bone_size(T.from_rows(ys @ q.T)), 1000.0, rtol=1e-12)
