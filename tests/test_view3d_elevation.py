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


class ElevationEstimator(FakeEstimator):
    """A fake with the Estimator's ``elevation_search`` switch, recorded per call."""

    def __init__(self) -> None:
        super().__init__(stages=1)
        self.elevation_search = False  # the window's default (on) is applied in the worker

    def estimate(self, image, boxes=None, on_stage=None, cancel=None):
        res = super().estimate(image, boxes, on_stage, cancel)
        self.calls[-1]["elevation_search"] = self.elevation_search
        res.model = {**(res.model or {}), "elevation_search": self.elevation_search}
        return res


def test_run_menu_turns_the_elevation_search_off_and_on_and_reruns(qtbot, settings, tmp_path):
    """On by default (ticked, and applied in the worker to an estimator that had it off);
    the Run menu's item re-runs the image without the search, and ticking it again re-runs
    with it."""
    est = ElevationEstimator()
    win = make_window(qtbot, settings, est)
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    assert win.action_elevation.isChecked() and est.calls[-1]["elevation_search"] is True
    text = win.view3d.summary.text()  # the fake's fit says some elevation: a measured one
    assert "camera elevation" in text and "level camera assumed" not in text
    with qtbot.waitSignal(win.worker.succeeded, timeout=10000):
        win.action_elevation.trigger()
    assert est.calls[-1]["elevation_search"] is False and len(est.calls) == 2
    text = win.view3d.summary.text()  # a level fit by assumption is not called measured
    assert "level camera assumed" in text and "camera elevation 0" not in text
    with qtbot.waitSignal(win.worker.succeeded, timeout=10000):
        win.action_elevation.trigger()
    assert est.calls[-1]["elevation_search"] is True and len(est.calls) == 3
    text = win.view3d.summary.text()
    assert "camera elevation" in text and "level camera assumed" not in text
