"""The 3D panel follows the fitted camera elevation: its view looks down on the floor as
the photo's camera did, and the info line says the elevation in degrees."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("PySide6")

from test_app import FakeEstimator, make_window, open_and_wait, write_image  # noqa: E402

from poseviewer.app.view3d import CAMERA_DEFAULTS  # noqa: E402


def test_view_and_info_line_follow_the_fitted_elevation(qtbot, settings, tmp_path):
    win = make_window(qtbot, settings, FakeEstimator(stages=1))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    panel = win.view3d
    fit = win.state.result.persons[0].final.fit
    k = int(fit.component[0])
    n = np.shape(fit.components.pose_3d)[1]
    other = (k + 1) % n
    el = np.zeros((1, n))
    el[0, k] = math.radians(35.0)  # what the lifting gives (fit.components.elevation)
    fit.components.elevation = el
    win.state.set_result(win.state.result, win.state.image)
    win.state.set_component(k)
    assert panel.view.camera.elevation == pytest.approx(35.0)
    assert "camera elevation 35\N{DEGREE SIGN}" in panel.summary.text()
    panel.view.camera.elevation = 70.0  # the user rotates; Reset view comes back
    panel.reset_view()
    assert panel.view.camera.elevation == pytest.approx(35.0)
    win.state.set_component(other)  # a level fit: the default view, "0 deg" said
    assert panel.view.camera.elevation == pytest.approx(CAMERA_DEFAULTS["elevation"])
    assert "camera elevation 0\N{DEGREE SIGN}" in panel.summary.text()
