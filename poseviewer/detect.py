"""Find people in a whole photo with OpenCV's HOG people detector (Dalal & Triggs).

``find_people(image_rgb)`` returns person boxes ``(x0, y0, x1, y1)`` in image pixels with
a score (the linear SVM's margin), best first, after non-maximum suppression. The image is
resized so that people of typical sizes fit the detector's 64 x 128 window (upscaled when
small, downscaled when large, for speed); boxes are mapped back, enlarged a little so that
head and feet are inside, and clipped to the image. Callers fall back to the whole image
when nothing is found (the Estimator does that).
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[np.ndarray, float]

_HOG: cv2.HOGDescriptor | None = None


def _hog() -> cv2.HOGDescriptor:
    global _HOG
    if _HOG is None:
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        _HOG = hog
    return _HOG


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.4,
        contain_threshold: float = 0.8) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    A box is dropped when its IoU with a kept, better box exceeds ``iou_threshold`` or when
    more than ``contain_threshold`` of its own area lies inside that box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        inside = inter / np.maximum(area[rest], 1e-9)
        order = rest[(iou <= iou_threshold) & (inside <= contain_threshold)]
    return np.array(keep, dtype=np.int64)


def enlarge_box(box: np.ndarray, width: int, height: int, fx: float = 1.1,
                fy: float = 1.15) -> np.ndarray:
    """Scale a box about its centre by (fx, fy) and clip it to the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) * fx / 2, (y1 - y0) * fy / 2
    return np.array([max(0.0, cx - hw), max(0.0, cy - hh), min(float(width), cx + hw),
                     min(float(height), cy + hh)], dtype=np.float64)


def find_people(image_rgb: np.ndarray, min_score: float = 0.75, work_size: tuple[int, int] =
                (320, 800), scale_step: float = 1.05) -> list[Box]:
    """Person boxes ``(array([x0, y0, x1, y1]), score)`` in image pixels, best first.

    image_rgb: (H, W, 3) uint8 RGB (or (H, W) grey). The image is resized so that its
    longer side lies within ``work_size`` (min, max) before the multi-scale search.
    ``min_score``: SVM margin below which windows are dropped (0.75 rejects the textured
    background false positives seen on the sample photo; true people score about 1-2).
    """
    if not hasattr(cv2, "HOGDescriptor"):
        raise RuntimeError("this OpenCV build has no HOGDescriptor (OpenCV 5 moved it to the "
                           "contrib modules): install opencv-contrib-python-headless")
    img = np.asarray(image_rgb)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"find_people expects an (H, W, 3) RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"find_people expects uint8 pixels, got {img.dtype}")
    h, w = img.shape[:2]
    if h < 8 or w < 8:
        raise ValueError(f"find_people: image {w}x{h} is too small")
    src = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2BGR)
    long_side = max(h, w)
    s = 1.0
    if long_side < work_size[0]:
        s = work_size[0] / long_side
    elif long_side > work_size[1]:
        s = work_size[1] / long_side
    work = src if s == 1.0 else cv2.resize(
        src, (max(1, round(w * s)), max(1, round(h * s))),
        interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
    # Pad so that people touching the border still fit the 64 x 128 window.
    pad = 16
    work = cv2.copyMakeBorder(work, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    if work.shape[0] < 128 + 2 * pad or work.shape[1] < 64 + 2 * pad:
        return []
    rects, weights = _hog().detectMultiScale(work, hitThreshold=0.0, winStride=(8, 8),
                                            padding=(8, 8), scale=scale_step)
    if len(rects) == 0:
        return []
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(weights, dtype=np.float64).reshape(-1)
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2],
                      rects[:, 1] + rects[:, 3]], axis=1)
    boxes = (boxes - pad) / s
    good = scores >= min_score
    boxes, scores = boxes[good], scores[good]
    keep = nms(boxes, scores)
    return [(enlarge_box(boxes[i], w, h), float(scores[i])) for i in keep]
