"""Belief-map panel: the 14 joints' maps of the selected stage, labelled, with a switch
between the CNN's maps, the projected maps of the lifted pose and the fused maps.
Clicking a map selects that joint everywhere."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from poseviewer.app.state import MAP_KIND_LABELS, MAP_KINDS, ViewerState
from poseviewer.skeleton import CPM14


def joint_label(j: int) -> str:
    """Short display label of CPM joint ``j`` ('R wrist', 'head top', ...)."""
    name = CPM14.joints[j]
    for side, short in (("right_", "R "), ("left_", "L ")):
        if name.startswith(side):
            return short + name[len(side):]
    return name.replace("_", " ")


class _MapBox(pg.ViewBox):
    clicked = Signal(int)

    def __init__(self, index: int) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMouse=False, enableMenu=False,
                         defaultPadding=0.0)
        self.index = index

    def mouseClickEvent(self, ev) -> None:  # noqa: N802
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self.clicked.emit(self.index)


class BeliefMapPanel(QWidget):
    """14 labelled belief maps of the selected stage and map kind."""

    KEYS = frozenset({"result", "person", "stage", "map_kind", "joint"})
    COLUMNS = 5

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("maps_panel")
        self.state = state
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        row = QHBoxLayout()
        row.addWidget(QLabel("Maps:"))
        self.kind_group = QButtonGroup(self)
        self.kind_buttons: dict[str, QRadioButton] = {}
        for kind in MAP_KINDS:
            b = QRadioButton(MAP_KIND_LABELS[kind])
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # arrows stay stage/component keys
            b.setObjectName(f"map_kind_{kind}")
            b.setToolTip({
                "cnn": "the CNN's own belief maps of this stage",
                "projected": "Gaussian maps drawn at the lifted 3D pose's projection",
                "fused": "what the stage passes on: CNN and projected maps fused",
            }[kind])
            self.kind_group.addButton(b)
            self.kind_buttons[kind] = b
            row.addWidget(b)
            b.toggled.connect(self._on_kind_toggled)
        row.addStretch(1)
        lay.addLayout(row)
        self.info = QLabel("")
        self.info.setObjectName("maps_info")

        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setBackground((30, 30, 34))
        lay.addWidget(self.glw, 1)
        lay.addWidget(self.info)
        lut = pg.colormap.get("inferno").getLookupTable(nPts=256)
        self.boxes: list[_MapBox] = []
        self.images: list[pg.ImageItem] = []
        self.titles: list[pg.LabelItem] = []
        self.values: list[pg.TextItem] = []  # confidence, drawn inside each map
        for j in range(CPM14.num_joints):
            r, c = divmod(j, self.COLUMNS)
            cell = self.glw.addLayout(row=r, col=c)
            title = cell.addLabel(joint_label(j), row=0, col=0, size="8pt", color="#ddd")
            vb = _MapBox(j)
            cell.addItem(vb, row=1, col=0)
            img = pg.ImageItem(axisOrder="row-major")
            img.setLookupTable(lut)
            vb.addItem(img)
            val = pg.TextItem("", color=(230, 230, 230, 150), anchor=(0, 0))
            font = val.textItem.font()
            font.setPointSizeF(6.5)
            val.setFont(font)
            val.setZValue(10)
            vb.addItem(val, ignoreBounds=True)
            vb.clicked.connect(self._on_map_clicked)
            self.values.append(val)
            self.boxes.append(vb)
            self.images.append(img)
            self.titles.append(title)
        self._levels = (0.0, 1.0)
        self._title_state: dict[int, tuple[str, str]] = {}
        self._grid: tuple[int, int] = (0, 0)
        self._selected_pen = pg.mkPen((255, 255, 0), width=3)
        state.changed.connect(self.on_state_changed)
        self._sync_kind_buttons()

    def _sync_kind_buttons(self) -> None:
        b = self.kind_buttons[self.state.map_kind]
        if not b.isChecked():
            b.blockSignals(True)
            b.setChecked(True)
            b.blockSignals(False)

    def _on_kind_toggled(self, checked: bool) -> None:
        if not checked:
            return
        for kind, b in self.kind_buttons.items():
            if b.isChecked():
                self.state.set_map_kind(kind)

    def _on_map_clicked(self, j: int) -> None:
        self.state.set_joint(None if self.state.joint == j else j)

    def on_state_changed(self, keys: frozenset) -> None:
        """Redraw maps / titles / selection for the keys that changed."""
        if not keys & self.KEYS:
            return
        if "map_kind" in keys:
            self._sync_kind_buttons()
        if keys & {"result", "person", "stage", "map_kind"}:
            self._draw_maps()
        if keys & {"result", "person", "stage", "joint"}:
            self._draw_titles()

    def _draw_maps(self) -> None:
        maps = self.state.maps()
        if maps is None or np.asarray(maps).size == 0:
            for img in self.images:
                img.clear()
            s = self.state.stage_result
            kind = MAP_KIND_LABELS[self.state.map_kind].lower()
            if s is None:
                text = ""
            elif maps is None:
                text = f"no {kind} maps at this stage (not lifted, or fusion off)"
            else:
                text = "no belief maps (2D joints imported, not from the CNN)"
            self.info.setText(text)
            return
        maps = np.asarray(maps, dtype=np.float32)
        hi = float(maps.max()) if maps.size else 1.0
        self._levels = (0.0, max(hi, 1e-6))
        for j, img in enumerate(self.images):
            img.setImage(maps[j], autoLevels=False, levels=self._levels)
        h, w = maps.shape[1:]
        if (h, w) != self._grid:
            self._grid = (h, w)
            for vb in self.boxes:
                vb.setRange(xRange=(0, w), yRange=(0, h), padding=0.0)
        self.info.setText(f"{MAP_KIND_LABELS[self.state.map_kind]} maps of stage "
                          f"{self.state.stage + 1}: {w}x{h} grid, shared colour scale "
                          f"0..{hi:.2f}; click a map to select its joint")

    def _draw_titles(self) -> None:
        # titles change only with the selection / visibility (a LabelItem text change
        # re-lays out the whole grid); the confidence is a TextItem inside each map
        s = self.state.stage_result
        for j, (title, vb, val) in enumerate(
                zip(self.titles, self.boxes, self.values, strict=True)):
            hidden = s is not None and not bool(s.visible[j])
            selected = j == self.state.joint
            text = joint_label(j) + (" (hidden)" if hidden else "")
            colour = "#ff0" if selected else ("#888" if hidden else "#ddd")
            if (text, colour) != self._title_state.get(j):
                title.setText(text, color=colour, size="8pt")
                self._title_state[j] = (text, colour)
                vb.setBorder(self._selected_pen if selected else None)
            conf = "" if s is None else f"{float(s.confidence[j]):.2f}"
            if conf != val.textItem.toPlainText():
                val.setText(conf)

    def map_data(self, j: int) -> np.ndarray | None:
        """The array map ``j`` currently shows (for tests)."""
        return self.images[j].image
