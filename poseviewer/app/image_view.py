"""Image panel: the photo, person boxes, the selected stage's 2D skeleton, the selected
component's projected joints and (optionally) a belief map laid over the photo.

Mouse: click selects the person under the cursor; left-drag on the photo draws a new
person box; the selected person's box has handles to move/resize it (both re-run the
estimate with the new boxes); wheel zooms, right-drag zooms, middle-drag pans.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QTransform
from PySide6.QtWidgets import QGraphicsRectItem

from poseviewer.selection import Selection
from poseviewer.skeleton import CPM14, H36M17, SIDE_COLOURS

#: A photo is fitted into the panel at most this many screen pixels per image pixel (a tiny
#: photo stays small and centred instead of a few pixels stretched over the panel).
MAX_FIT_ZOOM = 8.0


def _qcolor(rgb: tuple[float, float, float], alpha: float = 1.0) -> QColor:
    return QColor.fromRgbF(rgb[0], rgb[1], rgb[2], alpha)


def bone_segments(joints: np.ndarray, bones: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(2 * n, 2) segment end points of the bones in ``bones`` whose mask ``keep`` is set."""
    b = bones[keep]
    if len(b) == 0:
        return np.zeros((0, 2))
    return joints[b.reshape(-1)]


#: How a person whose 3D pose is not believable (``PersonResult.implausible``) is marked.
IMPLAUSIBLE_TEXT = "implausible 3D pose"
IMPLAUSIBLE_RGB = (255, 70, 70)


def overlay_lut(max_alpha: int = 190) -> np.ndarray:
    """(256, 4) uint8 'inferno' lookup table whose alpha grows with the value, so low
    belief leaves the photo visible."""
    rgb = pg.colormap.get("inferno").getLookupTable(nPts=256, alpha=False)
    alpha = (np.linspace(0.0, 1.0, 256) ** 0.7 * max_alpha).astype(np.uint8)
    return np.concatenate([rgb[:, :3], alpha[:, None]], axis=1).astype(np.uint8)


class PhotoViewBox(pg.ViewBox):
    """A ViewBox that reports clicks and draws a rubber-band box on left-drag."""

    clicked = Signal(float, float)
    box_drawn = Signal(float, float, float, float)

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._band = QGraphicsRectItem()
        self._band.setPen(pg.mkPen((255, 255, 0), width=2, style=Qt.PenStyle.DashLine,
                                   cosmetic=True))
        self._band.setZValue(100)
        self._band.hide()
        self.addItem(self._band, ignoreBounds=True)
        self.drawing_enabled = True

    def mouseClickEvent(self, ev) -> None:  # noqa: N802 (Qt naming)
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            p = self.mapSceneToView(ev.scenePos())
            self.clicked.emit(p.x(), p.y())
        else:
            super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev, axis=None) -> None:  # noqa: N802
        if ev.button() == Qt.MouseButton.MiddleButton:
            # pan
            ev.accept()
            tr = self.mapToView(ev.pos()) - self.mapToView(ev.lastPos())
            self.translateBy(x=-tr.x(), y=-tr.y())
            return
        if ev.button() != Qt.MouseButton.LeftButton or not self.drawing_enabled:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        a = self.mapSceneToView(ev.buttonDownScenePos())
        b = self.mapSceneToView(ev.scenePos())
        rect = QRectF(a, b).normalized()
        self._band.setRect(rect)
        self._band.show()
        if ev.isFinish():
            self._band.hide()
            if rect.width() >= 4 and rect.height() >= 4:
                self.box_drawn.emit(rect.left(), rect.top(), rect.right(), rect.bottom())


class ImagePanel(pg.GraphicsLayoutWidget):
    """Photo + overlays for the shared state."""

    person_clicked = Signal(int)
    boxes_edited = Signal(object)
    """(P, 4) boxes to re-run with (the selected box adjusted, or a new one appended)."""

    def __init__(self, state: Selection, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("image_panel")
        self.setBackground((30, 30, 34))
        self.state = state
        self.vb = PhotoViewBox()
        self.addItem(self.vb)
        self.photo = pg.ImageItem(axisOrder="row-major")
        self.photo.setPos(-0.5, -0.5)  # pixel centres at integer coordinates
        self.vb.addItem(self.photo)

        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(5)
        self.overlay_item.setLookupTable(overlay_lut())
        self.vb.addItem(self.overlay_item, ignoreBounds=True)

        self.other_boxes: list[QGraphicsRectItem] = []
        self.box_roi = pg.ROI([0, 0], [1, 1], pen=pg.mkPen((255, 230, 0), width=2),
                              rotatable=False, movable=True)
        for corner, opposite in (((0, 0), (1, 1)), ((1, 1), (0, 0)), ((1, 0), (0, 1)),
                                 ((0, 1), (1, 0))):
            self.box_roi.addScaleHandle(corner, opposite)
        self.box_roi.setZValue(20)
        self.box_roi.hide()
        self.box_roi.sigRegionChangeFinished.connect(self._on_roi_finished)
        self.vb.addItem(self.box_roi, ignoreBounds=True)
        self._roi_updating = False

        # skeleton: one curve per side (bones coloured by the child joint's side)
        self.skeleton_items: dict[str, pg.PlotDataItem] = {}
        bone_sides = np.array([CPM14.side(c) for _, c in CPM14.bones])
        self._bones = np.array(CPM14.bones)
        self._bone_side = bone_sides
        for side, rgb in SIDE_COLOURS.items():
            item = pg.PlotDataItem(connect="pairs", pen=pg.mkPen(_qcolor(rgb), width=3))
            item.setZValue(30)
            self.vb.addItem(item, ignoreBounds=True)
            self.skeleton_items[side] = item
        cols = CPM14.joint_colours()
        self._joint_brushes = [pg.mkBrush(_qcolor(tuple(c))) for c in cols]
        self._joint_pens = [pg.mkPen(_qcolor(tuple(c)), width=2) for c in cols]
        self.joints_item = pg.ScatterPlotItem(size=9, pxMode=True)
        self.joints_item.setZValue(31)
        self.vb.addItem(self.joints_item, ignoreBounds=True)
        self.selected_joint_item = pg.ScatterPlotItem(
            size=20, pxMode=True, pen=pg.mkPen("w", width=2), brush=None, symbol="o")
        self.selected_joint_item.setZValue(32)
        self.vb.addItem(self.selected_joint_item, ignoreBounds=True)

        # the selected component's projected joints (H36M-17), dashed white
        self.component_item = pg.PlotDataItem(
            connect="pairs", pen=pg.mkPen((255, 255, 255, 200), width=1.5,
                                          style=Qt.PenStyle.DashLine),
            symbol="x", symbolSize=7, symbolPen=pg.mkPen((255, 255, 255, 220)),
            symbolBrush=None)
        self.component_item.setZValue(25)
        self.vb.addItem(self.component_item, ignoreBounds=True)
        self._h36m_bones = np.array(H36M17.bones)

        self.vb.clicked.connect(self._on_clicked)
        self.vb.box_drawn.connect(self._on_box_drawn)
        ev = state.events
        ev.result.connect(self._on_result)
        ev.person.connect(self._on_person)
        ev.stage.connect(self._on_stage)
        ev.component.connect(self._on_component)
        ev.joint.connect(self._on_joint)
        ev.overlay.connect(self._on_overlay)
        ev.map_kind.connect(self._on_overlay)

    # ---- state -> view: only what each event touches (a component switch redraws one curve)
    def _on_result(self, _result: object) -> None:
        self._draw_photo()
        self._on_person(self.state.person)

    def _on_person(self, _person: int) -> None:
        self._draw_boxes()
        self._on_stage(self.state.stage)

    def _on_stage(self, _stage: int) -> None:
        self._draw_skeleton()
        self._draw_component()
        self._draw_overlay()

    def _on_component(self, _component: object) -> None:
        self._draw_component()

    def _on_joint(self, _joint: object) -> None:
        self._draw_skeleton()
        self._draw_overlay()

    def _on_overlay(self, _value: object) -> None:
        """The overlay switched, or the map kind it shows changed."""
        self._draw_overlay()

    def _draw_photo(self) -> None:
        img = self.state.image
        if img is None:
            self.photo.clear()
            self._photo_frame = None
            return
        h, w = img.shape[:2]
        res = self.state.result
        # the view works in the result's pixels (the original image); a display copy that
        # was downscaled on loading is stretched over that frame
        fw, fh = ((float(res.image_size[0]), float(res.image_size[1])) if res is not None
                  else (float(w), float(h)))
        old = self.photo.image
        same = old is img or (old is not None and old.shape == img.shape
                              and np.array_equal(old, img))
        if same and (fw, fh) == getattr(self, "_photo_frame", None):
            return  # same photo (a re-run with boxes): keep the user's zoom
        if not same:
            self.photo.setImage(img, autoLevels=False, levels=(0, 255))
        self.photo.setRect(QRectF(0.0, 0.0, fw, fh))  # the item itself sits at (-0.5, -0.5)
        self._photo_frame = (fw, fh)
        self.vb.setRange(self._fit_rect(fw, fh), padding=0.02)

    def _fit_rect(self, fw: float, fh: float) -> QRectF:
        """The view range that fits a (fw, fh) photo, zoomed in at most MAX_FIT_ZOOM."""
        rect = QRectF(-0.5, -0.5, fw, fh)
        vw, vh = self.vb.width(), self.vb.height()
        if vw > 1 and vh > 1 and min(vw / fw, vh / fh) > MAX_FIT_ZOOM:
            c = rect.center()
            w, h = max(fw, vw / MAX_FIT_ZOOM), max(fh, vh / MAX_FIT_ZOOM)
            rect = QRectF(c.x() - w / 2, c.y() - h / 2, w, h)
        return rect

    def _draw_boxes(self) -> None:
        for item in self.other_boxes:
            self.vb.removeItem(item)
        self.other_boxes = []
        res = self.state.result
        persons = res.persons if res is not None else []
        for i, p in enumerate(persons):
            odd = p.implausible
            if odd:  # marked on the photo, selected or not
                tag = pg.TextItem(IMPLAUSIBLE_TEXT, color=IMPLAUSIBLE_RGB,
                                  fill=pg.mkBrush(0, 0, 0, 150), anchor=(0, 1))
                tag.setPos(float(p.box[0]), float(p.box[1]))
                tag.setZValue(21)
                self.vb.addItem(tag, ignoreBounds=True)
                self.other_boxes.append(tag)
            if i == self.state.person:
                continue
            x0, y0, x1, y1 = (float(v) for v in p.box)
            rect = QGraphicsRectItem(QRectF(x0, y0, x1 - x0, y1 - y0))
            rect.setPen(pg.mkPen((*IMPLAUSIBLE_RGB, 220) if odd else (200, 200, 200, 160),
                                 width=1.5, style=Qt.PenStyle.DashLine, cosmetic=True))
            rect.setZValue(10)
            self.vb.addItem(rect, ignoreBounds=True)
            self.other_boxes.append(rect)
        p = self.state.person_result
        self.box_roi.setPen(pg.mkPen(IMPLAUSIBLE_RGB if p is not None and p.implausible
                                     else (255, 230, 0), width=2))
        self._roi_updating = True
        try:
            if p is None:
                self.box_roi.hide()
            else:
                x0, y0, x1, y1 = (float(v) for v in p.box)
                self.box_roi.setPos(QPointF(x0, y0), update=False, finish=False)
                self.box_roi.setSize(QPointF(x1 - x0, y1 - y0), update=True, finish=False)
                self.box_roi.show()
        finally:
            self._roi_updating = False

    def _draw_skeleton(self) -> None:
        s = self.state.stage_result
        if s is None:
            for item in self.skeleton_items.values():
                item.setData([], [])
            self.joints_item.clear()
            self.selected_joint_item.clear()
            return
        j = np.asarray(s.joints_2d, dtype=float)
        vis = np.asarray(s.visible, dtype=bool)
        both = vis[self._bones[:, 0]] & vis[self._bones[:, 1]]
        for side, item in self.skeleton_items.items():
            seg = bone_segments(j, self._bones, both & (self._bone_side == side))
            item.setData(seg[:, 0], seg[:, 1])
        empty = pg.mkBrush(None)
        brushes = [b if v else empty for b, v in zip(self._joint_brushes, vis, strict=True)]
        self.joints_item.setData(pos=j, brush=brushes, pen=self._joint_pens,
                                 symbol=["o" if v else "t" for v in vis])
        jt = self.state.joint
        if jt is None:
            self.selected_joint_item.clear()
        else:
            self.selected_joint_item.setData(pos=j[jt:jt + 1])

    def _draw_component(self) -> None:
        fit, k = self.state.fit, self.state.component
        if fit is None or k is None:
            self.component_item.setData([], [])
            return
        pts = np.asarray(fit.components.joints_2d[0, k], dtype=float)
        seg = pts[self._h36m_bones.reshape(-1)]
        self.component_item.setData(seg[:, 0], seg[:, 1])

    def _draw_overlay(self) -> None:
        p = self.state.person_result
        maps = self.state.maps()
        if not self.state.overlay or p is None or maps is None or np.asarray(maps).size == 0:
            self.overlay_item.hide()
            return
        jt = self.state.joint
        m = maps[jt] if jt is not None else maps.max(axis=0)
        m = np.asarray(m, dtype=np.float32)
        hi = float(m.max())
        self.overlay_item.setImage(m, autoLevels=False, levels=(0.0, max(hi, 1e-6)))
        a = np.asarray(p.map_to_image, dtype=float)
        # item pixel (u, v) spans [u, u+1): map grid point i sits at item coordinate i + 0.5
        dx = a[0, 2] - 0.5 * (a[0, 0] + a[0, 1])
        dy = a[1, 2] - 0.5 * (a[1, 0] + a[1, 1])
        self.overlay_item.setTransform(QTransform(a[0, 0], a[1, 0], a[0, 1], a[1, 1], dx, dy))
        self.overlay_item.show()

    # ---- view -> requests ----------------------------------------------------------------
    def _on_clicked(self, x: float, y: float) -> None:
        res = self.state.result
        if res is None or not res.persons:
            return
        hits = []
        for i, p in enumerate(res.persons):
            x0, y0, x1, y1 = p.box
            if x0 <= x <= x1 and y0 <= y <= y1:
                hits.append(((x1 - x0) * (y1 - y0), i))
        if hits:
            i = min(hits)[1]
            self.state.set_person(i)
            self.person_clicked.emit(i)

    def current_boxes(self) -> np.ndarray:
        """(P, 4) boxes of the current result's persons."""
        res = self.state.result
        if res is None or not res.persons:
            return np.zeros((0, 4))
        return np.array([np.asarray(p.box, dtype=float) for p in res.persons])

    def _on_box_drawn(self, x0: float, y0: float, x1: float, y1: float) -> None:
        if self.state.image is None:
            return
        boxes = self.current_boxes()
        new = np.array([[x0, y0, x1, y1]])
        self.boxes_edited.emit(np.concatenate([boxes, new]) if len(boxes) else new)

    def _on_roi_finished(self, roi=None) -> None:
        if self._roi_updating or self.state.person_result is None:
            return
        pos, size = self.box_roi.pos(), self.box_roi.size()
        boxes = self.current_boxes()
        boxes[self.state.person] = [pos.x(), pos.y(), pos.x() + size.x(), pos.y() + size.y()]
        self.boxes_edited.emit(boxes)

    def skeleton_points(self) -> dict[str, np.ndarray]:
        """What the skeleton curves currently show (for tests and screenshots)."""
        out = {}
        for side, item in self.skeleton_items.items():
            x, y = item.getData()
            out[side] = np.zeros((0, 2)) if x is None else np.stack([x, y], axis=1)
        return out

