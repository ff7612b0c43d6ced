"""Controls bar: stage slider/stepper (1..T), component selector (best marked, with
scores), belief-map overlay switch and the selected person."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QWidget,
)

from poseviewer.selection import Selection


class ControlsBar(QWidget):
    """Widgets that edit the shared state; they follow it too."""

    def __init__(self, state: Selection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("controls")
        self.state = state
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.addWidget(QLabel("Stage"))
        self.stage_slider = QSlider(Qt.Orientation.Horizontal)
        self.stage_slider.setObjectName("stage_slider")
        self.stage_slider.setMinimumWidth(120)
        self.stage_slider.setPageStep(1)
        self.stage_slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.stage_slider.setToolTip("CNN stage (Left/Right)")
        lay.addWidget(self.stage_slider)
        self.stage_spin = QSpinBox()
        self.stage_spin.setObjectName("stage_spin")
        self.stage_spin.setToolTip("CNN stage (Left/Right)")
        lay.addWidget(self.stage_spin)
        self.stage_total = QLabel("/ 0")
        lay.addWidget(self.stage_total)
        lay.addSpacing(12)
        lay.addWidget(QLabel("Component"))
        self.component_combo = QComboBox()
        self.component_combo.setObjectName("component_combo")
        self.component_combo.setToolTip("mixture component of the 3D model (Up/Down); "
                                        "\u2605 = best (lowest score)")
        self.component_combo.setMinimumContentsLength(22)
        lay.addWidget(self.component_combo)
        lay.addSpacing(12)
        self.overlay_check = QCheckBox("Map over photo")
        self.overlay_check.setObjectName("overlay_check")
        self.overlay_check.setToolTip("lay the selected joint's map (or all maps) over the photo")
        lay.addWidget(self.overlay_check)
        lay.addSpacing(12)
        self.person_label = QLabel("")
        self.person_label.setObjectName("person_label")
        self.person_label.setMinimumWidth(200)
        lay.addWidget(self.person_label)
        lay.addStretch(1)

        # arrow keys always step stages/components (window shortcuts): these widgets never
        # take keyboard focus, they are driven by the mouse and the shortcuts
        for w in (self.stage_slider, self.stage_spin, self.component_combo,
                  self.overlay_check):
            w.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.stage_slider.valueChanged.connect(self._on_stage_widget)
        self.stage_spin.valueChanged.connect(self._on_stage_widget)
        self.component_combo.activated.connect(self._on_component_widget)
        self.overlay_check.toggled.connect(state.set_overlay)
        ev = state.events
        for signal in (ev.result, ev.person, ev.stage, ev.component, ev.overlay):
            signal.connect(self.sync)
        self.sync()

    def _on_stage_widget(self, value: int) -> None:
        self.state.set_stage(value - 1)

    def _on_component_widget(self, index: int) -> None:
        self.state.set_component(index)

    def sync(self, _value: object = None) -> None:
        """Make the widgets show the state (on a new result, person, stage, component or
        overlay)."""
        st = self.state
        n = st.num_stages
        for w in (self.stage_slider, self.stage_spin):
            w.blockSignals(True)
            w.setRange(1 if n else 0, n)
            w.setValue(st.stage + 1 if n else 0)
            w.setEnabled(n > 1)
            w.blockSignals(False)
        self.stage_total.setText(f"/ {n}")
        fit = st.fit
        if fit is not None:
            scores = np.asarray(fit.components.score[0], dtype=float)
            best = st.best_component
            items = [f"#{c + 1}  score {sc:.4g}" + (" \u2605 best" if c == best else "")
                     for c, sc in enumerate(scores)]
        else:
            items = ["not lifted" if st.stage_result is not None else "-"]
        combo = self.component_combo
        combo.blockSignals(True)
        if combo.count() != len(items):  # rebuilding re-lays out the toolbar: only if needed
            combo.clear()
            combo.addItems(items)
        else:
            for i, text in enumerate(items):
                if combo.itemText(i) != text:
                    combo.setItemText(i, text)
        combo.setCurrentIndex(st.component or 0 if fit is not None else 0)
        combo.setEnabled(fit is not None)
        combo.blockSignals(False)
        self.overlay_check.blockSignals(True)
        self.overlay_check.setChecked(st.overlay)
        self.overlay_check.blockSignals(False)
        res = st.result
        if res is None or not res.persons:
            self.person_label.setText("")
        else:
            p = res.persons[st.person]
            odd = sum(q.implausible for q in res.persons)
            self.person_label.setText(
                f"person {st.person + 1}/{len(res.persons)} ({p.source})"
                + (", implausible 3D pose" if p.implausible else "")
                + (f"; {odd} of {len(res.persons)} implausible" if odd else ""))
