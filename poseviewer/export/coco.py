"""COCO keypoints JSON for the 2D joints (dataset layout: images, annotations, categories).

COCO-17 keypoints are filled from our CPM-14 joints by name (shoulders, elbows, wrists,
hips, knees, ankles) as ``[x, y, v]``: v = 2 visible, v = 1 located but judged not visible,
v = 0 (and x = y = 0) for the joints COCO has and we do not (nose, eyes, ears). Every
annotation also carries a ``"poseviewer"`` object with the full CPM-14 layout (including
our neck and head top) so that nothing is lost on a round trip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.export._io import atomic_write_text, check_result
from poseviewer.result import EstimateResult, StageResult
from poseviewer.skeleton import COCO17, CPM14, CPM_TO_COCO_DST, CPM_TO_COCO_SRC
from poseviewer.version import __version__

CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(COCO17.joints),
    "skeleton": [[a + 1, b + 1] for a, b in COCO17.bones],
}


def _xyv(xy: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(J, 2) + (J,) -> (J, 3) [x, y, v] with v = 2 / 1, and 0 (x = y = 0) for NaN joints."""
    xy = np.asarray(xy, dtype=np.float64)
    finite = np.all(np.isfinite(xy), axis=1)
    v = np.where(finite, np.where(np.asarray(visible, dtype=bool), 2, 1), 0)
    out = np.zeros((xy.shape[0], 3))
    out[finite, :2] = xy[finite]
    out[:, 2] = v
    return out


def _flat(a: np.ndarray) -> list[float | int]:
    return [int(v) if i % 3 == 2 else float(v) for i, v in enumerate(np.asarray(a).ravel())]


def cpm14_to_coco17(joints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(J, 2) CPM-14 joints + visibility -> (17, 3) COCO-17 keypoints [x, y, v]."""
    cpm = _xyv(joints, visible)
    out = np.zeros((COCO17.num_joints, 3))
    out[CPM_TO_COCO_DST] = cpm[CPM_TO_COCO_SRC]
    return out


def _annotation(stage: StageResult, box: np.ndarray, score: float, ann_id: int,
                image_id: int) -> dict[str, Any]:
    cpm = _xyv(stage.joints_2d, stage.visible)
    coco = np.zeros((COCO17.num_joints, 3))
    coco[CPM_TO_COCO_DST] = cpm[CPM_TO_COCO_SRC]
    conf = np.zeros(COCO17.num_joints)
    conf[CPM_TO_COCO_DST] = np.nan_to_num(np.asarray(stage.confidence)[CPM_TO_COCO_SRC])
    x0, y0, x1, y1 = (float(v) for v in box)
    neck, head = CPM14.index("neck"), CPM14.index("head_top")
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": _flat(coco),
        "num_keypoints": int((coco[:, 2] > 0).sum()),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": (x1 - x0) * (y1 - y0),
        "iscrowd": 0,
        "score": float(score),
        "keypoint_scores": conf.tolist(),
        "poseviewer": {
            "stage": int(stage.index),
            "neck": _flat(cpm[neck]),
            "head_top": _flat(cpm[head]),
            "cpm14_names": list(CPM14.joints),
            "cpm14_keypoints": _flat(cpm),
            "cpm14_scores": np.nan_to_num(np.asarray(stage.confidence, float)).tolist(),
            **_judgement(stage),
        },
    }


def _judgement(stage: StageResult) -> dict[str, Any]:
    """The stage's plausibility (``Fit.plausible``), when it was judged: {'plausible': bool}
    (a person not lifted is not plausible)."""
    fit = stage.fit
    if fit is None or getattr(fit, "plausible", None) is None:
        return {}
    return {"plausible": bool(np.asarray(fit.plausible)[0])}


def coco_dict(results: EstimateResult | Sequence[EstimateResult], stage: int = -1) -> dict:
    """COCO keypoints document for one or several results (``stage``: which CNN stage's
    joints, default the last)."""
    if isinstance(results, EstimateResult):
        results = [results]
    images, annotations = [], []
    for i, result in enumerate(results):
        check_result(result)
        image_id = i + 1
        name = Path(result.image_path).name if result.image_path else f"image_{image_id}"
        images.append({"id": image_id, "file_name": name, "width": int(result.image_size[0]),
                       "height": int(result.image_size[1]), "path": result.image_path})
        for person in result.persons:
            annotations.append(_annotation(person.stages[stage], person.box, person.score,
                                           len(annotations) + 1, image_id))
    return {
        "info": {"description": "2D joints exported by poseviewer",
                 "version": __version__, "joint_source": "cpm14"},
        "images": images,
        "annotations": annotations,
        "categories": [CATEGORY],
    }


def write_coco(results: EstimateResult | Sequence[EstimateResult],
               path: str | os.PathLike[str], stage: int = -1) -> Path:
    """Write the COCO keypoints JSON of one or several results (atomic)."""
    return atomic_write_text(path, json.dumps(coco_dict(results, stage), indent=1,
                                              allow_nan=False) + "\n")
