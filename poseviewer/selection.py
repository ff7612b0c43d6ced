"""The viewer's selection as a plain-Python evented model (no Qt: testable headless).

``Selection`` holds the current result (or a sequence of per-frame results, a video) and
what the user selected in it: frame, person, stage, mixture component, map kind, joint,
overlay. Setters validate and clamp, then emit one event per field they set, on
``Selection.events`` (a psygnal ``SignalGroup``, one signal per field, as napari's
``Dims.events``): ``events.stage`` carries the new stage, and so on. A view connects one
handler per event it shows (a misspelt event name is an AttributeError at connect time, not
a redraw silently skipped). Nothing is recomputed here: the result is cached and only
indexed. The viewer's panels connect to it directly (psygnal needs no Qt).
"""

from __future__ import annotations

import numpy as np
from psygnal import Signal, SignalGroup

from poseviewer.result import EstimateResult, Fit, PersonResult, ResultSequence, StageResult
from poseviewer.skeleton import CPM14, Skeleton

#: Belief-map kinds a view can show: StageResult attribute per kind.
MAP_KINDS: dict[str, str] = {
    "cnn": "cnn_maps",
    "projected": "projected_maps",
    "fused": "fused_maps",
}
MAP_KIND_LABELS: dict[str, str] = {"cnn": "CNN", "projected": "Projected", "fused": "Fused"}


class SelectionEvents(SignalGroup):
    """One signal per field of :class:`Selection`, each carrying the field's new value.

    An event fires once per setter call, after the whole selection is consistent again, and
    only when its field changed (``result`` whenever a result or an image is set). What a
    field's change re-derives comes with its event and has none of its own: ``result`` (a
    new photo, sequence or video frame, with its image) also sets person, stage and the
    component choice (and a new sequence's frame 0), so a view redraws everything on it;
    ``person`` clamps the stage (and fires ``stage`` only when that moved it); ``stage``
    changes the shown component when the user follows each stage's best (``component``
    fires only for the user's own choice, :meth:`Selection.set_component`)."""

    result = Signal(object)
    """The new ``EstimateResult`` (or None); ``Selection.image`` is set with it."""
    frame = Signal(int)
    """The frame of the sequence now shown (followed by ``result``)."""
    person = Signal(int)
    stage = Signal(int)
    component = Signal(object)
    """The user's component choice (int), or None: follow each stage's best."""
    map_kind = Signal(str)
    joint = Signal(object)
    """The selected CPM joint (int), or None."""
    overlay = Signal(bool)


class Selection:
    """Current result + selection; ``events`` has one signal per field."""

    def __init__(self, skeleton: Skeleton = CPM14) -> None:
        self.events = SelectionEvents()
        self.skeleton = skeleton
        """The results' 2D joint set (the network's ``PoseBackend.skeleton``)."""
        self.sequence: ResultSequence | None = None
        self.frame = 0
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
    def fit(self) -> Fit | None:
        """The selected stage's ``Fit`` (N = 1), or None when not lifted."""
        s = self.stage_result
        if s is None or s.fit is None:
            return None
        if not bool(np.asarray(s.fit.lifted).reshape(-1)[0]):
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
        """(J, Hm, Wm) maps of the selected kind for the selected stage (None if absent)."""
        s = self.stage_result
        return None if s is None else getattr(s, MAP_KINDS[self.map_kind])

    # ---- setters ---------------------------------------------------------------------------
    def set_sequence(self, sequence: ResultSequence | None) -> None:
        """Show a sequence of per-frame results (a video), starting at frame 0 (no image:
        the caller sets it per frame with :meth:`set_frame`)."""
        self.sequence = sequence
        self.frame = 0
        first = sequence[0] if sequence is not None and len(sequence) else None
        self.set_result(first, None, keep_sequence=True)

    def set_frame(self, index: int, image: np.ndarray | None = None) -> None:
        """Show frame ``index`` of the sequence (clamped), keeping person, stage and the
        user's component where the new frame has them."""
        seq = self.sequence
        if seq is None or not len(seq):
            return
        index = int(np.clip(index, 0, len(seq) - 1))
        if index == self.frame and image is None:
            return
        moved = index != self.frame
        self.frame = index
        old = self.person_result
        had_stages = self.num_stages
        self.result, self.image = seq[index], image
        n_persons = len(self.result.persons)
        same = [i for i, p in enumerate(self.result.persons)
                if old is not None and old.track_id is not None and p.track_id == old.track_id]
        if same and same[0] != self.person:  # the same person (by id) stays selected
            self.person = same[0]
        elif self.person >= n_persons:
            self.person = 0
        self.stage = min(self.stage, max(self.num_stages - 1, 0)) if had_stages else \
            max(self.num_stages - 1, 0)  # from a frame not estimated yet: the last stage
        if moved:
            self.events.frame.emit(index)
        self.events.result.emit(self.result)

    @property
    def not_lifted_reason(self) -> str | None:
        """Why the selected person's selected stage has no 3D pose (None: it has one, or
        nobody is selected)."""
        p, s = self.person_result, self.stage_result
        if p is None or s is None:
            return None
        who = f"person {p.track_id if p.track_id is not None else self.person}"
        if s.fit is None:
            return f"{who} not lifted at stage {s.index + 1}: no 3D fit (no 3D model, or " \
                "the fit was not kept)"
        if bool(np.asarray(s.fit.lifted).reshape(-1)[0]):
            return None
        n = int(np.asarray(s.visible, dtype=bool).sum())
        return (f"{who} not lifted at stage {s.index + 1}: only {n} of {len(s.visible)} "
                "joints visible (too few to lift)")

    @property
    def num_frames(self) -> int:
        """Frames of the sequence (1 for a single result, 0 without one)."""
        if self.sequence is not None:
            return len(self.sequence)
        return 0 if self.result is None else 1

    def set_result(self, result: EstimateResult | None, image: np.ndarray | None,
                   keep_sequence: bool = False) -> None:
        """Show a new result (person 0, last stage, best component; joint kept)."""
        if not keep_sequence:
            self.sequence, self.frame = None, 0
        self.result = result
        self.image = image
        self.person = 0
        self.stage = max(self.num_stages - 1, 0)
        self._component = None
        self.events.result.emit(result)

    def set_person(self, index: int) -> None:
        """Select person ``index`` (ignored when out of range)."""
        if self.result is None or not 0 <= index < len(self.result.persons):
            return
        if index == self.person:
            return
        self.person = index
        stage = self.stage
        self.stage = min(self.stage, max(self.num_stages - 1, 0))
        self.events.person.emit(index)
        if self.stage != stage:
            self.events.stage.emit(self.stage)

    def set_stage(self, index: int) -> None:
        """Select stage ``index`` (0-based, clamped to the available stages)."""
        n = self.num_stages
        index = int(np.clip(index, 0, max(n - 1, 0)))
        if index == self.stage:
            return
        self.stage = index
        self.events.stage.emit(index)

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
        self.events.component.emit(index)

    def step_component(self, delta: int) -> None:
        """Move ``delta`` components from the shown one (clamped)."""
        cur = self.component
        if cur is None:
            return
        target = int(np.clip(cur + delta, 0, self.num_components - 1))
        if target != cur or self._component is None:
            self._component = target
            self.events.component.emit(target)

    def set_map_kind(self, kind: str) -> None:
        """Show 'cnn', 'projected' or 'fused' maps."""
        if kind not in MAP_KINDS:
            raise ValueError(f"unknown map kind {kind!r}; expected one of {sorted(MAP_KINDS)}")
        if kind != self.map_kind:
            self.map_kind = kind
            self.events.map_kind.emit(kind)

    def set_joint(self, joint: int | None) -> None:
        """Select joint ``joint`` of :attr:`skeleton` everywhere, or None."""
        n = self.skeleton.num_joints
        if joint is not None and not 0 <= joint < n:
            raise ValueError(f"joint index {joint} out of range 0..{n - 1}")
        if joint != self.joint:
            self.joint = joint
            self.events.joint.emit(joint)

    def set_overlay(self, on: bool) -> None:
        """Lay the selected joint's map (or all maps' maximum) over the photo."""
        if bool(on) != self.overlay:
            self.overlay = bool(on)
            self.events.overlay.emit(self.overlay)
