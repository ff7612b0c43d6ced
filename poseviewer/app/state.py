"""The viewer's one shared state, for Qt: every view reads it and redraws when it changes.

``ViewerState`` wraps the plain-Python :class:`poseviewer.selection.Selection` (result and
selection: frame, person, stage, component, map kind, joint, overlay) in a QObject whose
Qt signal ``changed(frozenset[str])`` re-emits the model's. Reads and setters are the
model's (``state.stage``, ``state.set_stage(2)``, ...).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from poseviewer.selection import KEYS, MAP_KIND_LABELS, MAP_KINDS, Selection

__all__ = ["KEYS", "MAP_KINDS", "MAP_KIND_LABELS", "Selection", "ViewerState"]


class ViewerState(QObject):
    """Qt face of a :class:`Selection`: ``changed(frozenset[str])`` names what changed;
    every other attribute is the selection's."""

    changed = Signal(object)

    def __init__(self, parent: QObject | None = None,
                 selection: Selection | None = None) -> None:
        super().__init__(parent)
        self.selection = selection if selection is not None else Selection()
        self.selection.changed.connect(self._forward)

    def _forward(self, keys: frozenset[str]) -> None:
        self.changed.emit(keys)

    def __getattr__(self, name: str) -> Any:
        sel = self.__dict__.get("selection")
        if sel is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(sel, name)
