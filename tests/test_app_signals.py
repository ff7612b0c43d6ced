"""The viewer's routes: every signal of the worker, its controller and the selection,
emitted once with its declared types, reaches handlers that accept them. For Qt signals the
slots called are caught as they run (``sys.setprofile``) and their ``@Slot`` declarations
compared with the signal's; a slot that raises (say, one argument too many) is caught by
``sys.excepthook``, where PySide reports it. Drives the real window (pytest-qt under
pytest-xvfb) with the stand-in estimator of ``test_app``."""

from __future__ import annotations

import sys
from types import FrameType

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QMetaMethod, QObject  # noqa: E402
from test_app import FakeEstimator, make_window, open_and_wait, write_image  # noqa: E402

pytestmark = pytest.mark.gui

#: Handed to the worker thread (queued, no slot in this thread): every request checks it.
QUEUED_ONLY = {"requested"}
_SIGNAL = QMetaMethod.MethodType.Signal
_SLOT = QMetaMethod.MethodType.Slot


def declared_signals(obj: QObject) -> list[tuple[str, list[str]]]:
    """(name, parameter types) of the signals ``obj``'s own class declares."""
    mo = obj.metaObject()
    out = []
    for i in range(mo.methodOffset(), mo.methodCount()):
        m = mo.method(i)
        if m.methodType() == _SIGNAL:
            out.append((bytes(m.name()).decode(), [bytes(t).decode() for t in m.parameterTypes()]))
    return out


def declared_slot(obj: object, name: str) -> list[str] | None:
    """The parameter types of ``obj``'s ``@Slot`` named ``name`` (None: not declared)."""
    if not isinstance(obj, QObject):
        return None
    mo = obj.metaObject()
    for i in range(mo.methodCount()):
        m = mo.method(i)
        if m.methodType() == _SLOT and bytes(m.name()).decode() == name:
            return [bytes(t).decode() for t in m.parameterTypes()]
    return None


def sample_args(types: list[str], objects: list[object]) -> list[object]:
    """One value per declared type; ``objects`` fill the ``object`` (PyObject) places."""
    plain = {"int": 1, "double": 0.25, "bool": True, "QString": "a message"}
    pool = list(objects)
    out = []
    for t in types:
        if t == "PyObject":
            assert pool, f"no sample object left for {types}"
            out.append(pool.pop(0))
        else:
            out.append(plain[t])
    assert not pool, f"sample objects left over for {types}"
    return out


def emit_and_catch(signal, args: list[object]) -> tuple[list[tuple[object, str]], list]:
    """Emit ``signal(*args)`` here; return the Python handlers it called directly
    ((their self, their name)) and the exceptions they raised."""
    called: list[tuple[object, str]] = []
    raised: list[BaseException] = []
    here = sys._getframe()

    def profile(frame: FrameType, event: str, _arg) -> None:
        if event == "call" and frame.f_back is here:
            called.append((frame.f_locals.get("self"), frame.f_code.co_name))

    old_hook = sys.excepthook
    sys.excepthook = lambda _t, exc, _tb: raised.append(exc)
    sys.setprofile(profile)
    try:
        signal.emit(*args)
    finally:
        sys.setprofile(None)
        sys.excepthook = old_hook
    return called, raised


@pytest.fixture
def window(qtbot, settings, tmp_path, messages):
    win = make_window(qtbot, settings, FakeEstimator(stages=3, persons=2))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    yield win
    win.shutdown(30000)


def test_every_worker_signal_reaches_slots_declared_with_its_types(window, messages) -> None:
    from poseviewer.app.worker import ErrorKind
    from poseviewer.video import LiveStats

    win = window
    result, rgb = win.state.result, win.state.image
    assert result is not None and len(result.persons) == 2
    objects = {  # the values the object places carry, by signal name
        "succeeded": [result, rgb], "failed": [ErrorKind.IMAGE], "image_loaded": [rgb],
        "frame_done": [result, rgb], "live_frame": [rgb, result, LiveStats()],
        "video_failed": [ErrorKind.VIDEO]}
    checked = []
    for sender in (win.worker.worker, win.worker):  # the worker thread's side, the GUI's
        signals = declared_signals(sender)
        assert signals
        for name, types in signals:
            if name in QUEUED_ONLY:
                continue
            args = sample_args(types, objects.get(name, []))
            called, raised = emit_and_catch(getattr(sender, name), args)
            where = f"{type(sender).__name__}.{name}({', '.join(types)})"
            assert not raised, f"{where}: a slot raised {raised!r}"
            assert called, f"{where}: no slot of the viewer received it"
            for receiver, slot in called:
                declared = declared_slot(receiver, slot)
                assert declared == types, (
                    f"{where} reaches {type(receiver).__name__}.{slot}, declared "
                    f"@Slot({', '.join(declared or ['none'])})")
                checked.append(f"{type(receiver).__name__}.{slot}")
    # the window's own answers were shown: the error as its kind's title
    assert ("Cannot use this image", "a message") in messages
    assert {"MainWindow.on_progress", "MainWindow.on_succeeded", "MainWindow.on_failed",
            "VideoPanel._on_frame_done", "VideoPanel._on_failed",
            "WorkerController._on_progress"} <= set(checked)


def test_every_selection_event_reaches_handlers_that_accept_its_type(window) -> None:
    """Each of the selection's events, emitted with a value of its declared type, runs
    the panels' handlers without error (psygnal raises what a handler raises), and a
    misspelt event is an error, not a redraw silently skipped."""
    win = window
    samples = {int: 1, str: "cnn", bool: True, object: None}
    events = win.state.events
    names = sorted(events)
    assert names == ["component", "frame", "joint", "map_kind", "overlay", "person",
                     "result", "stage"]
    for name in names:
        sig = events[name]
        (param,) = sig.signature.parameters.values()
        if name != "frame":  # the timeline's own; the panels follow ``result``
            assert len(sig) > 0, f"no panel follows {name}"
        sig.emit(samples[param.annotation])
    with pytest.raises(AttributeError):
        events.stagee.connect(lambda _v: None)  # noqa: B018


def test_panels_redraw_on_their_events(window) -> None:
    """Each event redraws what shows its field: the stage's skeleton, the person's box,
    the component's 3D pose, the joint's title, the map kind's maps."""
    win = window
    st = win.state
    res = st.result
    st.set_stage(0)
    s0 = res.persons[0].stages[0]
    np.testing.assert_array_equal(win.maps_panel.map_data(4), s0.fused_maps[4])
    assert win.controls.stage_spin.value() == 1
    st.set_person(1)
    assert win.controls.person_label.text().startswith("person 2/2")
    np.testing.assert_array_equal(win.maps_panel.map_data(4),
                                  res.persons[1].stages[0].fused_maps[4])
    st.set_map_kind("cnn")
    np.testing.assert_array_equal(win.maps_panel.map_data(4),
                                  res.persons[1].stages[0].cnn_maps[4])
    assert win.maps_panel.kind_buttons["cnn"].isChecked()
    st.set_joint(4)
    assert win.maps_panel._title_state[4][1] == "#ff0"  # the selected joint's title
    if st.num_components > 1:
        bones = win.view3d.shown_bones.copy()
        st.set_component((st.component + 1) % st.num_components)
        assert not np.allclose(win.view3d.shown_bones, bones)
        assert win.controls.component_combo.currentIndex() == st.component


def test_each_action_redraws_each_part_once(qtbot, settings, monkeypatch) -> None:
    """One user action, one event, one redraw of each part that shows the changed field
    (a field's event stands for what it re-derives: no second redraw for those)."""
    from collections import Counter

    from test_app import make_result

    from poseviewer.app.image_view import ImagePanel
    from poseviewer.app.maps_view import BeliefMapPanel
    from poseviewer.app.view3d import Pose3DPanel
    from poseviewer.result import ResultSequence

    calls: Counter[str] = Counter()
    parts = {ImagePanel: ["_draw_photo", "_draw_boxes", "_draw_skeleton", "_draw_component",
                          "_draw_overlay"],
             BeliefMapPanel: ["_draw_maps", "_draw_titles"],
             Pose3DPanel: ["_draw", "_draw_selected"]}

    def counting(f, key):
        def counted(self, *a, **k):
            calls[key] += 1
            return f(self, *a, **k)
        return counted

    for cls, names in parts.items():
        for name in names:
            monkeypatch.setattr(cls, name, counting(getattr(cls, name),
                                                    f"{cls.__name__}.{name}"))
    win = make_window(qtbot, settings, FakeEstimator())
    st = win.state
    seq = ResultSequence.of([make_result((320, 400), 3, 2) for _ in range(3)])
    st.set_sequence(seq)
    image = {"ImagePanel._draw_photo", "ImagePanel._draw_boxes"}
    stage = {"ImagePanel._draw_skeleton", "ImagePanel._draw_component",
             "ImagePanel._draw_overlay", "BeliefMapPanel._draw_maps",
             "BeliefMapPanel._draw_titles", "Pose3DPanel._draw", "Pose3DPanel._draw_selected"}
    expected = [
        (lambda: st.set_frame(2, np.zeros((400, 320, 3), np.uint8)), image | stage),
        (lambda: st.set_stage(0), stage),
        (lambda: st.set_person(1), stage | {"ImagePanel._draw_boxes"}),
        (lambda: st.set_component(1), {"ImagePanel._draw_component", "Pose3DPanel._draw",
                                       "Pose3DPanel._draw_selected"}),
        (lambda: st.set_joint(3), {"ImagePanel._draw_skeleton", "ImagePanel._draw_overlay",
                                   "BeliefMapPanel._draw_titles",
                                   "Pose3DPanel._draw_selected"}),
        (lambda: st.set_map_kind("cnn"), {"ImagePanel._draw_overlay",
                                          "BeliefMapPanel._draw_maps"}),
        (lambda: st.set_overlay(True), {"ImagePanel._draw_overlay"}),
    ]
    try:
        for action, parts_drawn in expected:
            calls.clear()
            action()
            assert calls == Counter(parts_drawn)
    finally:
        win.shutdown(30000)
