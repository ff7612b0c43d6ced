"""The viewer's selection model (poseviewer/selection.py) without Qt: one event per field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_selection_model_emits_one_event_per_field_without_qt(k2_result) -> None:
    code = (
        "import sys\n"
        "from poseviewer.selection import Selection\n"
        "assert 'PySide6' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    from poseviewer.result import ResultSequence
    from poseviewer.selection import Selection

    sel = Selection()
    seen: list[tuple[str, object]] = []
    for name in sel.events:  # one signal per field, each with the field's new value
        sel.events[name].connect(lambda value, name=name: seen.append((name, value)))
    with pytest.raises(AttributeError):
        sel.events.stagee  # noqa: B018 - a misspelt event fails at once
    sel.set_result(k2_result, None)
    assert seen == [("result", k2_result)] and sel.num_components == 2
    sel.set_person(1)  # both persons have their stages: the stage stays, no stage event
    assert seen[-1] == ("person", 1) and len(seen) == 2 and sel.person == 1
    assert sel.num_stages == 1
    sel.set_stage(5)  # clamped to the one stage it has: no change, no event
    assert len(seen) == 2
    sel.set_component(5)  # clamped to the last component
    assert sel.component == 1 and seen[-1] == ("component", 1)
    n = len(seen)
    sel.set_component(1)  # no change, no event
    sel.set_stage(0)
    assert len(seen) == n
    sel.set_joint(3)
    sel.set_map_kind("cnn")
    sel.set_overlay(True)
    assert seen[-3:] == [("joint", 3), ("map_kind", "cnn"), ("overlay", True)]
    # a frame axis: a sequence of per-frame results
    sel.set_sequence(ResultSequence.of([k2_result, k2_result]))
    assert sel.num_frames == 2 and sel.frame == 0
    del seen[:]
    sel.set_frame(1)
    assert sel.frame == 1 and seen == [("frame", 1), ("result", k2_result)]
    sel.set_frame(9)  # clamped, already there: nothing
    assert sel.frame == 1 and len(seen) == 2
