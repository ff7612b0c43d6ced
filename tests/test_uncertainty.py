"""Calibration of the lifting's joint covariances (``poseviewer.eval3d``): Mahalanobis
distances, coverage and the fitted factor against hand-made and sampled cases."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_shared

from poseviewer import eval3d
from poseviewer.skeleton import H36M17


def _pose(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(scale=300.0, size=(n, 17, 3))


def test_mahalanobis_hand_case() -> None:
    """Identity covariance: d^2 is the squared distance after centring; the truth is first
    scaled to the prediction's total bone size (a truth twice as big is the same pose)."""
    rng = np.random.default_rng(0)
    pred = _pose(rng, 1)
    gt = pred.copy()
    gt[0, 3] += [3.0, 0.0, 0.0]  # one joint moved by 3 mm along x
    bones = np.array(H36M17.bones)
    cov = np.broadcast_to(np.eye(3), (1, 17, 3, 3)).copy()
    d2 = eval3d.mahalanobis_sq(pred, cov, gt * 2.0 + 50.0)
    size = lambda p: np.sqrt(((p[:, bones[:, 1]] - p[:, bones[:, 0]]) ** 2).sum())  # noqa: E731
    g = gt - gt.mean(1, keepdims=True)
    g = g * size(pred) / size(gt)
    r = g - (pred - pred.mean(1, keepdims=True))
    np.testing.assert_allclose(d2, (r**2).sum(-1), rtol=1e-10)
    assert d2[0, 3] > 1.0 and d2[0, 3] == d2.max()
    # a covariance 4x larger quarters d^2
    np.testing.assert_allclose(eval3d.mahalanobis_sq(pred, cov * 4, gt * 2.0 + 50.0), d2 / 4)
    # not lifted (NaN covariance) -> NaN
    assert np.isnan(eval3d.mahalanobis_sq(pred, cov * np.nan, gt)).all()


def test_coverage_of_gaussian_samples_is_nominal_and_factor_is_recovered() -> None:
    """Residuals drawn from N(0, 4 C): under C the 90% ellipsoid holds far fewer than 90%;
    the fitted factor is ~4 and with it the coverage is nominal at every level."""
    rng = np.random.default_rng(1)
    n = 20000
    a = rng.normal(size=(3, 3))
    c = a @ a.T + np.eye(3)
    r = rng.multivariate_normal(np.zeros(3), 4 * c, size=n)
    d2 = np.einsum("ni,ij,nj->n", r, np.linalg.inv(c), r)
    raw = eval3d.coverage(d2)
    assert raw[0.9] < 0.6
    f = eval3d.fit_cov_scale(d2)
    assert f == pytest.approx(4.0, rel=0.05)
    scaled = eval3d.coverage(d2 / f, levels=(0.5, 0.9, 0.95, 0.99))
    for level, got in scaled.items():
        assert got == pytest.approx(level, abs=0.015)
    assert np.isnan(eval3d.coverage(np.full(5, np.nan))[0.9])
    with pytest.raises(ValueError, match="no finite"):
        eval3d.fit_cov_scale(np.full(3, np.nan))


def test_student_t_ellipsoids_hold_their_level() -> None:
    """``ellipsoid_d2``: samples of 3D Student-t's (covariance C, dof 3.5 / 6 / 15) fall
    inside the level ellipsoid of C at the nominal rate; a large dof gives the chi-square
    quantile; eval-3d's coverage and fitted factor use the same radii per sample."""
    from scipy.stats import chi2

    from poseviewer.lifting import ellipsoid_d2

    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 3))
    c = a @ a.T + np.eye(3)
    lc = np.linalg.cholesky(c)
    n = 40000
    d2s, nus = [], []
    for nu in (3.5, 6.0, 15.0):
        z = rng.normal(size=(n, 3)) @ lc.T
        x = z * np.sqrt((nu - 2.0) / rng.chisquare(nu, size=n))[:, None]  # covariance C
        d2 = np.einsum("ni,ij,nj->n", x, np.linalg.inv(c), x)
        for level in (0.5, 0.9, 0.95):
            assert (d2 <= ellipsoid_d2(level, nu)).mean() == pytest.approx(level, abs=0.01)
        # the Gaussian's radius would be wrong for heavy tails (dof 3.5: far too few inside
        # at 95%)
        if nu == 3.5:
            assert (d2 <= chi2.ppf(0.95, 3)).mean() < 0.93
        d2s.append(d2)
        nus.append(np.full(n, nu))
    assert ellipsoid_d2(0.9, 1e7) == pytest.approx(chi2.ppf(0.9, 3), rel=1e-5)
    assert ellipsoid_d2(0.9, np.inf) == pytest.approx(chi2.ppf(0.9, 3))
    with pytest.raises(ValueError, match="level"):
        ellipsoid_d2(1.0, 5.0)
    d2, nu = np.concatenate(d2s), np.concatenate(nus)
    assert eval3d.coverage(d2, dof=nu)[0.9] == pytest.approx(0.9, abs=0.01)
    assert eval3d.fit_cov_scale(d2 * 3.0, dof=nu) == pytest.approx(3.0, rel=0.05)
    # per-pose dof broadcast over the joints: (N, 17) distances with (N,) dof
    mixed = np.r_[nu[:500], nu[-500:]]  # dof 3.5 and 15
    x = np.r_[d2[: 17 * 500], d2[-17 * 500 :]]
    per_pose = eval3d.coverage(x.reshape(1000, 17), dof=mixed)
    assert per_pose == eval3d.coverage(x, dof=np.repeat(mixed, 17))


def test_evaluate_reports_calibration(model, tmp_path) -> None:
    """A small eval-3d run with calibration: d^2 for every job, one factor per model fitted
    on the calibration subject; with it that subject's own 90% coverage is 90%."""
    data = require_shared("data", "h36m", "h36m_3d_17j_10hz.npz")
    cfg = eval3d.EvalConfig(stride=600, hidden=(0, 2), projections=("perspective",))
    poses, actions, subjects = eval3d.load_test_poses(data, cfg)
    cal = eval3d.load_test_poses(data, eval3d.EvalConfig(subjects=(8,), stride=300))[0]
    res = eval3d.evaluate({"released": model}, poses, actions, subjects, cfg, progress=False,
                          calibration=(cal, (8,)))
    assert set(res.d2) == {("released", "perspective", 0), ("released", "perspective", 2)}
    assert res.d2[("released", "perspective", 0)].shape == (len(poses), 17)
    assert set(res.dof) == set(res.d2)
    dof = res.dof[("released", "perspective", 2)]
    assert dof.shape == (len(poses),) and (dof >= 3).all() and (dof < 2 * 12).all()
    # the Student-t posterior with the fit's own noise is nearly calibrated as it is: the
    # factor fitted on S8 is close to 1 and the raw 90% ellipsoids hold close to 90%
    assert 0.5 < res.cov_scale["released"] < 2.0
    raw, scaled = res.coverage("released"), res.coverage("released", scaled=True)
    # (the elevation grid's choice among rotations gives the distances heavier tails: a
    # factor fitted on these few S8 poses moves the test poses' coverage a little more)
    assert abs(raw[0.9] - 0.9) < 0.06 and abs(scaled[0.9] - 0.9) < 0.07
    text = eval3d.report_markdown(res)
    assert "Coverage (% of true joints inside the 50% / 90% / 95% ellipsoids)" in text
    assert "fitted on S8" in text
    eval3d.plot_calibration(res, tmp_path / "cal.png")
    assert (tmp_path / "cal.png").read_bytes()[:4] == b"\x89PNG"
    # the factor fitted on the test subjects themselves gives them exactly 90%
    d2 = np.concatenate(list(res.d2.values()))
    dof = np.concatenate(list(res.dof.values()))
    f = eval3d.fit_cov_scale(d2, dof=dof)
    assert eval3d.coverage(d2 / f, dof=dof)[0.9] == pytest.approx(0.9, abs=0.01)


def test_exports_carry_the_joint_covariances(model, ref, tmp_path) -> None:
    """The lifting's covariances reach the result (``Fit.from_lift``) and survive the JSON
    and NPZ round trips (field table: ``joint_cov``, ``components.joint_cov``, mm^2)."""
    from poseviewer.export import read_json, read_npz, write_json, write_npz
    from poseviewer.result import EstimateResult, Fit, PersonResult, StageResult

    xy = ref["in_pose_2d_yx"][16][:, ::-1].copy()
    vis = ref["in_visibility"][16]
    lifted = model.lift(xy[None], vis[None])
    fit = Fit.from_lift(lifted)
    want = lifted.components.joint_cov
    np.testing.assert_array_equal(fit.components.joint_cov, want)
    np.testing.assert_array_equal(fit.joint_cov, lifted.joint_cov)
    maps = np.zeros((14, 6, 5), np.float32)
    stage = StageResult(index=0, cnn_maps=maps, projected_maps=None, fused_maps=maps,
                        joints_2d=xy, confidence=np.full(14, 0.9), visible=vis.copy(),
                        fit=fit, seconds=0.01)
    box = np.r_[xy.min(0), xy.max(0)]
    res = EstimateResult(image_size=(640, 480), persons=[PersonResult(
        box=box, centre=(box[:2] + box[2:]) / 2, source="user", map_to_image=np.eye(2, 3),
        stages=[stage], score=1.0)], timings={}, model={"name": "t"}, device="cpu")
    for write, read, name in ((write_json, read_json, "r.json"), (write_npz, read_npz, "r.npz")):
        back = read(write(res, tmp_path / name)).persons[0].final.fit
        np.testing.assert_allclose(back.components.joint_cov, want, rtol=1e-12)
        np.testing.assert_allclose(back.joint_cov, lifted.joint_cov, rtol=1e-12)
