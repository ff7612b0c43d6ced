"""Import 2D joints (COCO-style keypoints, COCO-17 or CPM-14 layout, or our JSON) and lift
them to 3D without the CNN."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.export._io import ImportFormatError
from poseviewer.export.json_format import SCHEMA, resolved_image_path, result_from_dict
from poseviewer.result import EstimateResult, Fit, PersonResult, StageResult
from poseviewer.skeleton import (
    COCO17,
    CPM14,
    CPM_TO_COCO_DST,
    CPM_TO_COCO_SRC,
    finite_visible,
)

#: The joint counts of the two layouts read here (the lifting's 2D input is CPM-14).
_J, _JC = CPM14.num_joints, COCO17.num_joints


@dataclass
class Imported2D:
    """The 2D joints of the people of one image, CPM-14 layout, image pixels (x, y)."""

    joints_2d: np.ndarray
    """(P, J, 2) float64; NaN where a joint is unknown (e.g. head top from COCO-17)."""
    visible: np.ndarray
    """(P, J) bool: joints to use for the lifting (never a NaN or infinite joint)."""
    confidence: np.ndarray
    """(P, J) float64 (the file's scores, else 1 for visible and 0 for other joints)."""
    boxes: np.ndarray
    """(P, 4) x0, y0, x1, y1 (the file's boxes, else the extent of the known joints)."""
    image: str | None = None
    """Image file name or path as the file gives it."""
    image_size: tuple[int, int] | None = None
    source: str = ""
    """Where the joints came from, e.g. 'coco17 keypoints from people.json'."""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.visible = finite_visible(self.joints_2d, self.visible)


def _box_of(joints: np.ndarray) -> np.ndarray:
    ok = np.all(np.isfinite(joints), axis=1)
    if not ok.any():
        return np.zeros(4)
    pts = joints[ok]
    return np.r_[pts.min(axis=0), pts.max(axis=0)]


def _from_xyv(kp: Any, n: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat [x, y, v, ...] -> (n, 2) xy (NaN where v = 0), (n,) visible (v = 2 and finite),
    (n,) v."""
    try:
        arr = np.asarray(kp, dtype=np.float64).reshape(n, 3)
    except (TypeError, ValueError) as exc:
        raise ImportFormatError(f"{what}: expected {3 * n} numbers [x, y, v, ...]") from exc
    v = arr[:, 2]
    xy = np.where((v > 0)[:, None], arr[:, :2], np.nan)
    return xy, finite_visible(xy, v >= 2), v


def _coco_annotation_to_cpm(ann: dict, layout: str | None, what: str
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """One COCO-style annotation -> CPM-14 (joints, visible, confidence, notes)."""
    notes: list[str] = []
    extra = ann.get("poseviewer")
    if layout is None and isinstance(extra, dict) and "cpm14_keypoints" in extra:
        xy, vis, v = _from_xyv(extra["cpm14_keypoints"], _J, f"{what}.poseviewer")
        scores = extra.get("cpm14_scores")
        conf = (np.asarray(scores, np.float64) if scores is not None
                else vis.astype(np.float64))
        return xy, vis, conf, notes
    kp = ann.get("keypoints")
    if kp is None:
        raise ImportFormatError(f"{what}: no 'keypoints'")
    n = len(kp)
    lay = layout or {3 * _JC: "coco17", 3 * _J: "cpm14"}.get(n)
    if lay not in ("coco17", "cpm14"):
        raise ImportFormatError(
            f"{what}: {n} keypoint numbers; expected {3 * _JC} (COCO-17) or {3 * _J} (CPM-14) "
            "as [x, y, v]"
        )
    scores = ann.get("keypoint_scores")
    if lay == "cpm14":
        xy, vis, v = _from_xyv(kp, _J, what)
        conf = np.asarray(scores, np.float64) if scores is not None and len(scores) == _J \
            else vis.astype(np.float64)
        return xy, vis, conf, notes
    cxy, cvis, cv = _from_xyv(kp, _JC, what)
    cconf = np.asarray(scores, np.float64) if scores is not None and len(scores) == _JC \
        else cvis.astype(np.float64)
    xy = np.full((_J, 2), np.nan)
    vis = np.zeros(_J, dtype=bool)
    conf = np.zeros(_J)
    xy[CPM_TO_COCO_SRC] = cxy[CPM_TO_COCO_DST]
    vis[CPM_TO_COCO_SRC] = cvis[CPM_TO_COCO_DST]
    conf[CPM_TO_COCO_SRC] = cconf[CPM_TO_COCO_DST]
    ls, rs = COCO17.index("left_shoulder"), COCO17.index("right_shoulder")
    neck = CPM14.index("neck")
    if np.isfinite(cxy[[ls, rs]]).all():
        xy[neck] = (cxy[ls] + cxy[rs]) / 2
        vis[neck] = bool(cvis[ls] and cvis[rs])
        conf[neck] = min(cconf[ls], cconf[rs])
        notes.append("neck = midpoint of the COCO shoulders")
    # the head top is one of the lifting's 14 observed joints (H36M 'head'); without it
    # the person is lifted from the other 13
    notes.append("COCO-17 has no head top: unknown; lifted without it")
    return xy, vis, conf, notes


def _read_coco(doc: Any, name: str, layout: str | None) -> list[Imported2D]:
    if isinstance(doc, dict):
        anns = doc.get("annotations")
        images = doc.get("images") or []
        cats = doc.get("categories") or []
        if layout is None:
            for c in cats:
                if isinstance(c, dict) and list(c.get("keypoints", [])) == list(CPM14.joints):
                    layout = "cpm14"
    else:
        anns, images = doc, []
    if not isinstance(anns, list):
        raise ImportFormatError(f"{name}: no COCO 'annotations' list")
    info = {im.get("id"): im for im in images if isinstance(im, dict)}
    order: list[Any] = [im.get("id") for im in images if isinstance(im, dict)]
    groups: dict[Any, list[tuple]] = {i: [] for i in order}
    all_notes: dict[Any, set[str]] = {}
    for a, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise ImportFormatError(f"{name}: annotation {a} is not an object")
        if ann.get("category_id", 1) != 1 and "keypoints" not in ann:
            continue
        image_id = ann.get("image_id")
        xy, vis, conf, notes = _coco_annotation_to_cpm(ann, layout, f"{name}: annotation {a}")
        bbox = ann.get("bbox")
        if bbox is not None and len(bbox) == 4:
            x, y, w, h = (float(b) for b in bbox)
            box = np.array([x, y, x + w, y + h])
        else:
            box = _box_of(xy)
        if image_id not in groups:
            groups[image_id] = []
            order.append(image_id)
        groups[image_id].append((xy, vis, conf, box))
        all_notes.setdefault(image_id, set()).update(notes)
    out = []
    for image_id in order:
        people = groups[image_id]
        im = info.get(image_id, {})
        size = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im \
            else None
        p_n = len(people)
        out.append(Imported2D(
            joints_2d=np.array([p[0] for p in people]).reshape(p_n, _J, 2),
            visible=np.array([p[1] for p in people], dtype=bool).reshape(p_n, _J),
            confidence=np.array([p[2] for p in people]).reshape(p_n, _J),
            boxes=np.array([p[3] for p in people]).reshape(p_n, 4),
            image=im.get("path") or im.get("file_name") or (
                None if image_id is None else str(image_id)),
            image_size=size,
            source=f"COCO-style keypoints from {name}",
            notes=sorted(all_notes.get(image_id, ())),
        ))
    return out


def _from_result(result: EstimateResult, name: str, stage: int) -> Imported2D:
    persons = result.persons
    p_n = len(persons)
    st = [p.stages[stage] for p in persons]
    return Imported2D(
        joints_2d=np.array([s.joints_2d for s in st], dtype=np.float64).reshape(p_n, _J, 2),
        visible=np.array([s.visible for s in st], dtype=bool).reshape(p_n, _J),
        confidence=np.array([s.confidence for s in st], dtype=np.float64).reshape(p_n, _J),
        boxes=np.array([p.box for p in persons], dtype=np.float64).reshape(p_n, 4),
        image=result.image_path,
        image_size=tuple(result.image_size),
        source=f"poseviewer result {name} (stage {st[0].index + 1 if st else '-'})",
    )


def read_joints_2d(path: str | os.PathLike[str], layout: str | None = None,
                   stage: int = -1) -> list[Imported2D]:
    """2D joints from a file, one :class:`Imported2D` per image.

    Understands our JSON (``"schema": "poseviewer.result"``; joints of ``stage``, default
    the last) and COCO-style keypoints: a dataset (``images`` / ``annotations`` /
    ``categories``) or a results list of annotations, in COCO-17 (3 x 17 numbers) or CPM-14 (3 x 14
    numbers) layout (``layout`` = 'coco17' / 'cpm14' forces one). COCO ``v = 2`` joints are
    used for the lifting; ``v = 1`` ones are kept but not used; ``v = 0`` ones are unknown.
    From COCO-17 the neck is the shoulders' midpoint and the head top stays unknown.
    """
    path = Path(path)
    if layout not in (None, "coco17", "cpm14"):
        raise ValueError(f"layout must be 'coco17' or 'cpm14', not {layout!r}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no such file: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(doc, dict) and doc.get("schema") == SCHEMA:
        try:
            result = result_from_dict(doc)
            result.image_path = resolved_image_path(result.image_path, path)
            return [_from_result(result, path.name, stage)]
        except ImportFormatError as exc:
            raise ImportFormatError(f"{path}: {exc}") from exc
    if isinstance(doc, dict) and "annotations" in doc or isinstance(doc, list):
        return _read_coco(doc, path.name, layout)
    raise ImportFormatError(
        f"{path}: not a format poseviewer imports (expected our result JSON or COCO-style "
        "keypoints with an 'annotations' list)"
    )


def lift_imported(item: Imported2D, model: Any, model_path: str | None = None
                  ) -> EstimateResult:
    """Lift imported 2D joints with a 3D model (a ``poseviewer.lifting.PoseModel3D``, or
    anything with its ``lift(joints, visible)``; no CNN, no belief maps): an EstimateResult
    with one stage per person."""
    t0 = time.perf_counter()
    p_n = item.joints_2d.shape[0]
    joints = np.asarray(item.joints_2d, dtype=np.float64)
    vis = finite_visible(joints, item.visible)  # NaN / infinite joints: never visible
    messages = [f"2D joints imported ({item.source}); no belief maps"] + list(item.notes)
    fit = None
    if p_n:
        safe = np.where(vis[..., None] & np.isfinite(joints), joints, 0.0)
        fit = Fit.from_lift(model.lift(safe, vis, as_numpy=True))
    seconds = time.perf_counter() - t0
    empty = np.zeros((_J, 0, 0), dtype=np.float32)
    persons = []
    for p in range(p_n):
        pfit = fit.select([p])
        if not bool(np.asarray(pfit.lifted)[0]):
            n_vis = int(vis[p].sum())
            messages.append(f"person {p}: {n_vis} visible joint{'s' * (n_vis != 1)}, fewer "
                            "than 5: not lifted" if n_vis < 5 else
                            f"person {p}: its {n_vis} visible joints lie on one image row: "
                            "not lifted")
        box = np.asarray(item.boxes[p], dtype=np.float64)
        persons.append(PersonResult(
            box=box,
            centre=np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]),
            source="imported",
            map_to_image=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
            stages=[StageResult(index=0, cnn_maps=empty, projected_maps=None,
                                fused_maps=empty, joints_2d=joints[p].copy(),
                                confidence=np.asarray(item.confidence[p], np.float64),
                                visible=vis[p].copy(), fit=pfit, seconds=seconds / p_n)],
        ))
    if not p_n:
        messages.append("no person in the imported file")
    size = item.image_size
    if size is None:
        finite = joints[np.isfinite(joints).all(axis=-1)]
        size = (int(np.ceil(finite[:, 0].max())) + 1, int(np.ceil(finite[:, 1].max())) + 1) \
            if finite.size else (0, 0)
    meta = dict(getattr(model, "meta", {}) or {})
    return EstimateResult(
        image_size=(int(size[0]), int(size[1])),
        persons=persons,
        timings={"lift": seconds, "total": seconds},
        model={"name": "imported 2D joints + 3D pose model", "pose_model": model_path,
               "pose_model_meta": meta},
        device="cpu",
        image_path=item.image,
        messages=messages,
    )
