"""Belief-map panel: the 14 joints' maps of the selected stage, labelled, with a switch
between the CNN's maps, the projected maps of the lifted pose and the fused maps.
Clicking a map selects that joint everywhere."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QFontMetricsF
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from poseviewer.selection import MAP_KIND_LABELS, MAP_KINDS, Selection
from poseviewer.skeleton import CPM14

BACKGROUND = (30, 30, 34)
#: With *Crop*, each tile is drawn at this many screen pixels per map pixel (at most), the
#: person's crop under the map.
CROP_UPSAMPLE = 4


def best_columns(n: int, tile_w: float, tile_h: float, width: float, height: float,
                 band_px: float = 0.0) -> tuple[int, float]:
    """How many columns lay out ``n`` tiles of ``tile_w`` x ``tile_h`` (gaps included)
    largest in a ``width`` x ``height`` area, each row also holding a ``band_px`` title band
    of fixed height; returns (columns, the tiles' scale). Fewest columns on ties."""
    best, best_scale = 1, -1.0
    for c in range(1, n + 1):
        rows = -(-n // c)
        scale = min(width / (c * tile_w), (height - rows * band_px) / (rows * tile_h))
        if scale > best_scale * (1 + 1e-9):
            best, best_scale = c, scale
    return best, best_scale


def crop_affine(map_to_image: np.ndarray, display_scale: float, up: int) -> np.ndarray:
    """2 x 3 affine from an ``up``-times upsampled tile's pixels to the displayed photo's
    pixels (map pixel centres at integers), for ``cv2.warpAffine(..., WARP_INVERSE_MAP)``."""
    t = np.array([[1.0 / up, 0.0, 0.5 / up - 0.5], [0.0, 1.0 / up, 0.5 / up - 0.5],
                  [0.0, 0.0, 1.0]])
    m = np.vstack([np.asarray(map_to_image, dtype=np.float64), [0.0, 0.0, 1.0]])
    return (display_scale * (m @ t))[:2]


def joint_label(j: int) -> str:
    """Short display label of CPM joint ``j`` ('R wrist', 'head top', ...)."""
    name = CPM14.joints[j]
    for side, short in (("right_", "R "), ("left_", "L ")):
        if name.startswith(side):
            return short + name[len(side):]
    return name.replace("_", " ")


class _MosaicBox(pg.ViewBox):
    clicked = Signal(float, float)

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMouse=False, enableMenu=False,
                         defaultPadding=0.01)

    def mouseClickEvent(self, ev) -> None:  # noqa: N802
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            p = self.mapSceneToView(ev.scenePos())
            self.clicked.emit(p.x(), p.y())


class BeliefMapPanel(QWidget):
    """14 labelled belief maps of the selected stage and map kind."""

    def __init__(self, state: Selection, parent: QWidget | None = None) -> None:
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
        self.crop_check = QCheckBox("Crop")
        self.crop_check.setObjectName("map_crop")
        self.crop_check.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.crop_check.setToolTip("draw each map over the person's crop (the pixels the "
                                   "network saw), the map's colour where it is high")
        self.crop_check.toggled.connect(lambda _on: self._draw_maps())
        row.addSpacing(12)
        row.addWidget(self.crop_check)
        row.addStretch(1)
        lay.addLayout(row)
        self.info = QLabel("")
        self.info.setObjectName("maps_info")
        self.info.setWordWrap(True)  # the panel may be narrower than the line

        # one image holds all 14 maps as tiles (painting one item is much cheaper than
        # 14 view boxes); names and confidences are text items over it
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setBackground(BACKGROUND)
        lay.addWidget(self.glw, 1)
        lay.addWidget(self.info)
        self.box = _MosaicBox()
        self.glw.addItem(self.box)
        self.mosaic = pg.ImageItem(axisOrder="row-major")
        self.box.addItem(self.mosaic)
        self._lut = pg.colormap.get("inferno").getLookupTable(nPts=256, alpha=True)
        self.titles: list[pg.TextItem] = []
        self.values: list[pg.TextItem] = []  # confidence, drawn inside each map
        for j in range(CPM14.num_joints):
            title = pg.TextItem(joint_label(j), color="#ddd", anchor=(0.5, 1.0))
            val = pg.TextItem("", color=(230, 230, 230, 150), anchor=(0, 0))
            font = val.textItem.font()
            font.setPointSizeF(6.5)
            val.setFont(font)
            for item in (title, val):
                item.setZValue(10)
                item.hide()  # shown once there are maps to label (laid out as tiles)
                self.box.addItem(item, ignoreBounds=True)
            self.titles.append(title)
            self.values.append(val)
        self.selection = QGraphicsRectItem()
        self.selection.setPen(pg.mkPen((255, 255, 0), width=3, cosmetic=True))
        self.selection.setZValue(11)
        self.selection.hide()
        self.box.addItem(self.selection, ignoreBounds=True)
        self.box.clicked.connect(self._on_clicked)
        self._maps: np.ndarray | None = None
        self._values = np.zeros((0, 0), np.float32)
        self._title_state: dict[int, tuple[str, str]] = {}
        self._grid: tuple[int, int] = (0, 0)
        self.columns = 5
        self._band: int | None = None  # title band (map pixels), set by _fit_columns
        self.glw.installEventFilter(self)  # tiles grow with the panel: columns follow it
        ev = state.events
        ev.result.connect(self._on_shown_maps)
        ev.person.connect(self._on_shown_maps)
        ev.stage.connect(self._on_shown_maps)
        ev.map_kind.connect(self._on_map_kind)
        ev.joint.connect(self._on_joint)
        self._sync_kind_buttons()

    # ---- tile geometry (item coordinates = map pixels) -----------------------------------
    def _cell(self) -> tuple[int, int, int, int]:
        """Map height and width, the gap between tiles and the title band above each row
        (map pixels; the band fits the titles at the current scale)."""
        h, w = self._grid
        return h, w, max(1, round(0.08 * w)), self._band or max(3, round(0.35 * h))

    def tile_rect(self, j: int) -> QRectF:
        """Where map ``j`` sits in the mosaic (view coordinates)."""
        h, w, gap, band = self._cell()
        r, c = divmod(j, self.columns)
        return QRectF(c * (w + gap), r * (h + band) + band, w, h)

    def tile_screen_size(self) -> float:
        """The width of a tile on screen (pixels)."""
        r = self.box.mapViewToScene(self.tile_rect(0)).boundingRect()
        return float(r.width())

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802
        if obj is self.glw and ev.type() == QEvent.Type.Resize and self._grid != (0, 0):
            if self._fit_columns(ev.size()):
                self._draw_maps()
        return False

    def _fit_columns(self, size=None) -> bool:
        """Pick the column count that makes the tiles largest in the panel (``size``: the
        map area's new size, default its current one); True when it changed (the tiles
        were laid out again)."""
        h, w, gap, _ = self._cell()
        size = size if size is not None else self.glw.size()
        title_px = QFontMetricsF(self.titles[0].textItem.font()).height() + 3.0
        c, scale = best_columns(CPM14.num_joints, w + gap, h, max(size.width(), 1) * 0.97,
                                max(size.height(), 1) * 0.97, band_px=title_px)
        band = max(3, int(np.ceil(title_px / max(scale, 0.05))))
        if (c, band) == (self.columns, self._band):
            return False
        self.columns, self._band = c, band
        self._layout(h, w)
        return True

    def tile_scene_centre(self, j: int) -> QPointF:
        """Centre of map ``j`` in scene coordinates (for tests)."""
        return self.box.mapViewToScene(self.tile_rect(j).center())

    def _layout(self, h: int, w: int) -> None:
        self._grid = (h, w)
        for j in range(CPM14.num_joints):
            rect = self.tile_rect(j)
            self.titles[j].setPos(rect.center().x(), rect.top())
            self.values[j].setPos(rect.left(), rect.top())
        self.box.setRange(self._mosaic_rect(), padding=0.01)
        self._draw_selection()

    def _mosaic_rect(self) -> QRectF:
        h, w, gap, band = self._cell()
        rows = -(-CPM14.num_joints // self.columns)
        return QRectF(0, 0, self.columns * (w + gap) - gap, rows * (h + band))

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

    def _on_clicked(self, x: float, y: float) -> None:
        if self._maps is None:
            return
        for j in range(CPM14.num_joints):
            if self.tile_rect(j).contains(QPointF(x, y)):
                self.state.set_joint(None if self.state.joint == j else j)
                return

    # ---- state -> view ------------------------------------------------------------------
    def _on_shown_maps(self, _value: object) -> None:
        """A new result, person or stage: other maps, other titles."""
        self._draw_maps()
        self._draw_titles()

    def _on_map_kind(self, _kind: str) -> None:
        self._sync_kind_buttons()
        self._draw_maps()

    def _on_joint(self, _joint: object) -> None:
        self._draw_titles()

    def _draw_maps(self) -> None:
        maps = self.state.maps()
        if maps is None or np.asarray(maps).size == 0:
            self._maps = None
            self.mosaic.clear()
            self._show_labels(False)
            self.info.setText(self._no_maps_text(maps))
            return
        maps = np.asarray(maps, dtype=np.float32)
        self._maps = maps
        h, w = maps.shape[1:]
        if (h, w) != self._grid:
            self._layout(h, w)
            self._fit_columns()
        self._show_labels(True)
        hi = max(float(maps.max()), 1e-6)
        _, _, gap, band = self._cell()
        rows = -(-CPM14.num_joints // self.columns)
        values = np.full((rows * (h + band), self.columns * (w + gap) - gap), np.nan,
                         dtype=np.float32)
        for j in range(CPM14.num_joints):
            r, c = divmod(j, self.columns)
            y0, x0 = r * (h + band) + band, c * (w + gap)
            values[y0:y0 + h, x0:x0 + w] = maps[j]
        self._values = values
        crop = self.crop_pixels(CROP_UPSAMPLE) if self.crop_check.isChecked() else None
        up = CROP_UPSAMPLE if crop is not None else 1
        if up > 1:  # every map pixel becomes up x up screen-resolution pixels
            values = np.repeat(np.repeat(values, up, axis=0), up, axis=1)
            smooth = [np.repeat(np.repeat(maps[j], up, axis=0), up, axis=1)
                      for j in range(CPM14.num_joints)]
        idx = np.clip(np.nan_to_num(values, nan=0.0) * (255.0 / hi), 0, 255).astype(np.uint8)
        rgba = self._lut[idx]
        rgba[np.isnan(values), 3] = 0  # gaps show the background
        if crop is not None:  # the map's colour over the crop where the map is high
            for j in range(CPM14.num_joints):
                r, c = divmod(j, self.columns)
                y0, x0 = (r * (h + band) + band) * up, c * (w + gap) * up
                a = np.clip(smooth[j] / hi, 0.0, 1.0)[..., None]
                tile = rgba[y0:y0 + h * up, x0:x0 + w * up, :3].astype(np.float32)
                rgba[y0:y0 + h * up, x0:x0 + w * up, :3] = np.round(
                    crop * (1.0 - a) + tile * a).astype(np.uint8)
        self.mosaic.setImage(rgba, levels=None, autoLevels=False)
        self.mosaic.setRect(self._mosaic_rect())
        self.info.setText(f"{MAP_KIND_LABELS[self.state.map_kind]} maps of stage "
                          f"{self.state.stage + 1}: {w}x{h} grid, shared colour scale "
                          f"0..{hi:.2f}; click a map to select its joint")

    def crop_pixels(self, up: int) -> np.ndarray | None:
        """The selected person's crop as the network saw it, dimmed grey RGB float
        (Hm * up, Wm * up, 3), from the displayed photo; None without a photo or maps."""
        import cv2

        p, img, res = self.state.person_result, self.state.image, self.state.result
        if p is None or img is None or res is None or self._grid == (0, 0):
            return None
        h, w = self._grid
        ow = float(res.image_size[0]) or float(img.shape[1])
        a = crop_affine(p.map_to_image, img.shape[1] / ow, up)
        crop = cv2.warpAffine(np.ascontiguousarray(img), a, (w * up, h * up),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        grey = crop.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.repeat((grey * 0.8)[..., None], 3, axis=2)

    def _no_maps_text(self, maps: np.ndarray | None) -> str:
        """Why no maps are shown (empty before the first result)."""
        s, p = self.state.stage_result, self.state.person_result
        if s is None or p is None:
            return ""
        if s.cnn_maps is None or np.asarray(s.cnn_maps).size == 0:  # none at all
            if p.source == "imported":
                return "no belief maps (2D joints imported, not from the CNN)"
            return ("no belief maps in this result: it was saved without them (JSON never "
                    "keeps maps; NPZ exports do)")
        kind = MAP_KIND_LABELS[self.state.map_kind].lower()
        return f"no {kind} maps at this stage (not lifted, or fusion off)"

    def _show_labels(self, on: bool) -> None:
        """Titles and confidences only over tiles: hidden while there are no maps."""
        for item in (*self.titles, *self.values):
            if item.isVisible() != on:
                item.setVisible(on)

    def _draw_titles(self) -> None:
        s = self.state.stage_result
        for j, (title, val) in enumerate(zip(self.titles, self.values, strict=True)):
            hidden = s is not None and not bool(s.visible[j])
            text = joint_label(j)  # grey when hidden; the tile's corner says "hidden"
            colour = "#ff0" if j == self.state.joint else ("#888" if hidden else "#ddd")
            if (text, colour) != self._title_state.get(j):
                title.setText(text, color=colour)
                self._title_state[j] = (text, colour)
            conf = "" if s is None or self._maps is None else \
                f"{float(s.confidence[j]):.2f}" + (" hidden" if hidden else "")
            if conf != val.textItem.toPlainText():
                val.setText(conf)
        self._draw_selection()

    def _draw_selection(self) -> None:
        j = self.state.joint
        if j is None or self._grid == (0, 0):
            self.selection.hide()
        else:
            self.selection.setRect(self.tile_rect(j))
            self.selection.show()

    def title_text(self, j: int) -> str:
        """The label of map ``j`` as shown."""
        return self.titles[j].textItem.toPlainText()

    def map_data(self, j: int) -> np.ndarray | None:
        """The (Hm, Wm) values shown in tile ``j`` of the mosaic (None when no maps)."""
        if self._maps is None:
            return None
        r = self.tile_rect(j)
        y0, x0 = round(r.top()), round(r.left())
        return self._values[y0:y0 + round(r.height()), x0:x0 + round(r.width())]
