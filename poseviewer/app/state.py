"""The viewer's one shared state: every view reads it and redraws when it changes.

``ViewerState`` holds the current result and what the user selected in it (person, stage,
mixture component, map kind, joint). Setters validate and clamp, then emit ``changed``
with the set of keys that changed; each view redraws only if a key it shows is in the set.
Nothing is recomputed here: the result is cached and only indexed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from poseviewer.result import EstimateResult, PersonResult, StageResult

#: Belief-map kinds a view can show: StageResult attribute per kind.
MAP_KINDS: dict[str, str] = {
    "cnn": "cnn_maps",
    "projected": "projected_maps",
    "fused": "fused_maps",
}
MAP_KIND_LABELS: dict[str, str] = {"cnn": "CNN", "projected": "Projected", "fused": "Fused"}

#: Keys carried by ``ViewerState.changed``.
KEYS = frozenset({"result", "person", "stage", "component", "map_kind", "joint", "overlay"})


class ViewerState(QObject):
    """Current result + selection. ``changed(frozenset[str])`` names what changed."""

    changed = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.result: EstimateResult | None = None
        self.image: np.ndarray | None = None
        self.person = 0
        self.stage = 0
        self._component: int | None = None  # None: follow the best component of each stage
        self.map_kind = "fused"
        self.joint: int | None = None
        self.overlay = False

    # ---- derived -------------------------------------------------------------------------
    @property
    def person_result(self) -> PersonResult | None:
        """The selected person, or None when there is no result / nobody."""
        if self.result is None or not self.result.persons:
            return None
        return self.result.persons[self.person]

    @property
    def stage_result(self) -> StageResult | None:
        """The selected stage of the selected person."""
        p = self.person_result
        if p is None or not p.stages:
            return None
        return p.stages[self.stage]

    @property
    def fit(self) -> Any | None:
        """The selected stage's ``LiftResult`` (N = 1), or None when not lifted."""
        s = self.stage_result
        if s is None or s.fit is None:
            return None
        lifted = getattr(s.fit, "lifted", None)
        if lifted is not None and not bool(np.asarray(lifted).reshape(-1)[0]):
            return None
        return s.fit

    @property
    def num_stages(self) -> int:
        """Stages of the selected person (0 without a result)."""
        p = self.person_result
        return len(p.stages) if p is not None else 0

    @property
    def num_components(self) -> int:
        """Mixture components of the selected stage's fit (0 when not lifted)."""
        fit = self.fit
        return 0 if fit is None else int(np.asarray(fit.components.score).shape[1])

    @property
    def best_component(self) -> int | None:
        """Index of the best component of the selected stage (None when not lifted)."""
        fit = self.fit
        return None if fit is None else int(np.asarray(fit.component).reshape(-1)[0])

    @property
    def component(self) -> int | None:
        """The shown component: the user's choice, else the stage's best; None if not lifted."""
        n = self.num_components
        if n == 0:
            return None
        if self._component is None:
            return self.best_component
        return min(self._component, n - 1)

    @property
    def follows_best(self) -> bool:
        """True while the user has not picked a component (the view shows each stage's best)."""
        return self._component is None

    def maps(self) -> np.ndarray | None:
        """(14, Hm, Wm) maps of the selected kind for the selected stage (None if absent)."""
        s = self.stage_result
        return None if s is None else getattr(s, MAP_KINDS[self.map_kind])

    # ---- setters ---------------------------------------------------------------------------
    def _emit(self, keys: set[str]) -> None:
        if keys:
            self.changed.emit(frozenset(keys))

    def set_result(self, result: EstimateResult | None, image: np.ndarray | None) -> None:
        """Show a new result (person 0, last stage, best component; joint kept)."""
        self.result = result
        self.image = image
        self.person = 0
        self.stage = max(self.num_stages - 1, 0)
        self._component = None
        self._emit(set(KEYS))

    def set_person(self, index: int) -> None:
        """Select person ``index`` (ignored when out of range)."""
        if self.result is None or not 0 <= index < len(self.result.persons):
            return
        if index == self.person:
            return
        self.person = index
        self.stage = min(self.stage, max(self.num_stages - 1, 0))
        self._emit({"person", "stage", "component"})

    def set_stage(self, index: int) -> None:
        """Select stage ``index`` (0-based, clamped to the available stages)."""
        n = self.num_stages
        index = int(np.clip(index, 0, max(n - 1, 0)))
        if index == self.stage:
            return
        old_comp = self.component
        self.stage = index
        keys = {"stage"}
        if self.component != old_comp:
            keys.add("component")
        self._emit(keys)

    def step_stage(self, delta: int) -> None:
        """Move ``delta`` stages (clamped)."""
        self.set_stage(self.stage + delta)

    def set_component(self, index: int | None) -> None:
        """Show component ``index`` (None: follow each stage's best component)."""
        n = self.num_components
        if index is not None:
            if n == 0:
                return
            index = int(np.clip(index, 0, n - 1))
        if index == self._component:
            return
        self._component = index
        self._emit({"component"})

    def step_component(self, delta: int) -> None:
        """Move ``delta`` components from the shown one (clamped)."""
        cur = self.component
        if cur is None:
            return
        target = int(np.clip(cur + delta, 0, self.num_components - 1))
        if target != cur or self._component is None:
            self._component = target
            self._emit({"component"})

    def set_map_kind(self, kind: str) -> None:
        """Show 'cnn', 'projected' or 'fused' maps."""
        if kind not in MAP_KINDS:
            raise ValueError(f"unknown map kind {kind!r}; expected one of {sorted(MAP_KINDS)}")
        if kind != self.map_kind:
            self.map_kind = kind
            self._emit({"map_kind"})

    def set_joint(self, joint: int | None) -> None:
        """Select CPM joint ``joint`` (0..13) everywhere, or None."""
        if joint is not None and not 0 <= joint < 14:
            raise ValueError(f"joint index {joint} out of range 0..13")
        if joint != self.joint:
            self.joint = joint
            self._emit({"joint"})

    def set_overlay(self, on: bool) -> None:
        """Lay the selected joint's map (or all maps' maximum) over the photo."""
        if bool(on) != self.overlay:
            self.overlay = bool(on)
            self._emit({"overlay"})
