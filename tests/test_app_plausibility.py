"""The viewer marks a person whose 3D pose is not believable (issue 22)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from test_plausibility import _result_with_broken_person  # noqa: E402

from poseviewer.app import configure  # noqa: E402


def test_viewer_marks_an_implausible_person(qtbot, settings, artifacts_dir) -> None:
    from poseviewer.app.image_view import IMPLAUSIBLE_RGB, IMPLAUSIBLE_TEXT
    from poseviewer.app.main_window import MainWindow

    configure()
    res = _result_with_broken_person()
    assert [p.implausible for p in res.persons] == [False, True]
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    win.resize(1300, 820)
    win.show()
    win.state.set_result(res, np.full((240, 200, 3), 90, np.uint8))
    panel = win.image_panel

    def tags() -> list[tuple[str, float, float]]:
        return [(it.textItem.toPlainText(), it.pos().x(), it.pos().y())
                for it in panel.other_boxes if isinstance(it, pg.TextItem)]

    # person 1 selected (person 0 not): one tag, at person 1's box corner; person 1's
    # box (the other one) drawn in the mark's colour
    win.state.set_person(0)
    x0, y0 = (float(v) for v in res.persons[1].box[:2])
    assert tags() == [(IMPLAUSIBLE_TEXT, x0, y0)]
    rects = [it for it in panel.other_boxes if not isinstance(it, pg.TextItem)]
    assert len(rects) == 1 and rects[0].pen().color().getRgb()[:3] == IMPLAUSIBLE_RGB
    assert panel.box_roi.pen.color().getRgb()[:3] != IMPLAUSIBLE_RGB
    assert "1 of 2 implausible" in win.controls.person_label.text()
    # person 1 selected: its own box in the mark's colour, the label says so
    win.state.set_person(1)
    assert tags() == [(IMPLAUSIBLE_TEXT, x0, y0)]
    assert panel.box_roi.pen.color().getRgb()[:3] == IMPLAUSIBLE_RGB
    assert "implausible 3D pose" in win.controls.person_label.text()
    win.grab().save(str(artifacts_dir / "app_implausible.png"))
