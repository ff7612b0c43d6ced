"""The 3D panel's uncertainty toggle: the solid component's 90% joint ellipsoids."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from test_app import FakeEstimator, make_window, open_and_wait, write_image  # noqa: E402

from poseviewer.app.view3d import centred_pose, ellipsoid_segments  # noqa: E402

CHI2_3_90 = 6.251388631170325  # scipy.stats.chi2.ppf(0.9, 3)


def test_ellipsoid_segments_hand_case() -> None:
    """A diagonal covariance diag(30^2, 20^2, 10^2) mm^2: the ellipses reach
    sqrt(chi2_3(0.9)) x (30, 20, 10) mm along the axes, in metres, around the centre; a
    rotated covariance gives the same ellipsoid rotated."""
    from scipy.stats import chi2

    assert chi2.ppf(0.9, 3) == pytest.approx(CHI2_3_90, rel=1e-12)
    c = np.array([[0.1, -0.2, 0.3]])
    cov = np.diag([30.0**2, 20.0**2, 10.0**2])[None]
    seg = ellipsoid_segments(c, cov, n=24)
    assert seg.shape == (3 * 24 * 2, 3)
    r = np.sqrt(CHI2_3_90) * np.array([0.030, 0.020, 0.010])
    ext = np.abs(seg - c).max(0)
    np.testing.assert_allclose(ext, r, rtol=1e-6)
    # every point lies on the chi2 surface of the covariance
    d = (seg - c) * 1000.0
    np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov[0]), d),
                               CHI2_3_90, rtol=1e-5)
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    seg_r = ellipsoid_segments(c, (rot @ cov[0] @ rot.T)[None], n=24)
    np.testing.assert_allclose(np.abs(seg_r - c).max(0), r[[1, 0, 2]], rtol=1e-6)


def test_uncertainty_toggle_draws_the_solid_components_ellipsoids(
        qtbot, settings, tmp_path):  # noqa: F811 (the fixture imported from test_app)
    win = make_window(qtbot, settings, FakeEstimator(stages=1))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    panel = win.view3d
    s = win.state.result.persons[0].final
    comps = s.fit.components
    k = int(s.fit.component[0])
    # covariances of the solid component: joint j gets (10 (j + 1))^2 mm^2 isotropic
    cov = np.zeros((1, np.shape(comps.pose_3d)[1], 17, 3, 3))
    cov[0, k] = np.eye(3)[None] * ((10.0 * np.arange(1, 18)) ** 2)[:, None, None]
    comps.joint_cov = cov  # what the lifting gives (fit.components.joint_cov)
    comps.joint_cov_dof = None  # a Gaussian posterior (the dof case below)
    win.state.set_result(win.state.result, win.state.image)
    win.state.set_component(k)
    assert len(panel.shown_ellipsoids) == 0  # off by default
    panel.cov_check.setChecked(True)
    seg = panel.shown_ellipsoids
    assert seg.shape == (17 * 3 * 24 * 2, 3)
    solid, _ = centred_pose(np.asarray(comps.pose_3d[0, k]))
    per_joint = seg.reshape(3, 17, 48, 3).transpose(1, 0, 2, 3).reshape(17, -1, 3)
    radius = np.linalg.norm(per_joint - solid[:, None], axis=-1)
    want = np.sqrt(CHI2_3_90) * 0.010 * np.arange(1, 18)
    np.testing.assert_allclose(radius, np.broadcast_to(want[:, None], radius.shape), rtol=1e-5)
    # a Student-t posterior with 6 degrees of freedom: the 90% region of its covariance
    # reaches sqrt(3 F^-1(0.9; 3, 6) (6 - 2) / 6) standard deviations
    from scipy.stats import f

    dof = np.full((1, np.shape(comps.pose_3d)[1]), 40.0)
    dof[0, k] = 6.0
    comps.joint_cov_dof = dof
    panel.cov_check.setChecked(False)
    panel.cov_check.setChecked(True)
    per_joint = panel.shown_ellipsoids.reshape(3, 17, 48, 3).transpose(1, 0, 2, 3)
    radius = np.linalg.norm(per_joint.reshape(17, -1, 3) - solid[:, None], axis=-1)
    want_t = np.sqrt(3.0 * f.ppf(0.9, 3, 6.0) * 4.0 / 6.0) * 0.010 * np.arange(1, 18)
    np.testing.assert_allclose(radius, np.broadcast_to(want_t[:, None], radius.shape),
                               rtol=1e-5)
    assert want_t[0] > want[0]  # heavier tails: larger than the Gaussian's
    panel.cov_check.setChecked(False)
    assert len(panel.shown_ellipsoids) == 0 and not panel.ellipsoids.visible
    # a result without covariances: the toggle is disabled and draws nothing
    del comps.joint_cov
    win.state.set_result(win.state.result, win.state.image)
    panel.cov_check.setChecked(True)
    assert not panel.cov_check.isEnabled() and len(panel.shown_ellipsoids) == 0
