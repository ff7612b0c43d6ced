"""Our JSON format (``"schema": "poseviewer.result"``, version 1); see docs/export-format.md."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer import __version__
from poseviewer.export._io import (
    ImportFormatError,
    atomic_write_text,
    check_result,
    fit_arrays,
    make_fit,
)
from poseviewer.result import EstimateResult, PersonResult, StageResult
from poseviewer.skeleton import CPM14, H36M17, Skeleton

SCHEMA = "poseviewer.result"
VERSION = 1

UNITS = {
    "joints_2d": "image pixels",
    "pose_3d": "size-normalised millimetres (every skeleton scaled to 1139.6 mm total bone "
    "length)",
    "yaw": "radians",
    "seconds": "seconds",
}

COORDINATE_FRAMES = {
    "image": "pixels of the image as analysed (after EXIF rotation): x to the right, y down, "
    "origin at the top-left corner of the top-left pixel",
    "pose_3d": "x = image right, y = depth away from the camera, z = up (right-handed); "
    "orthographic camera looking along +y; the origin is NOT the pelvis: it lies within about "
    "55 mm of the joint centroid for uncapped components. Components whose scale was capped "
    "(capped = true, scale = -0.001) carry the lifting's depth quirk: the whole pose is "
    "shifted in y by tens of metres; bone vectors and x, z are unaffected. Values are "
    "faithful to the lifting, not re-centred.",
}


def _skeleton_info(sk: Skeleton) -> dict[str, Any]:
    return {
        "names": list(sk.joints),
        "parents": [int(p) for p in sk.parents()],
        "bones": [[int(a), int(b)] for a, b in sk.bones],
        "left": list(sk.left),
        "right": list(sk.right),
    }


def _lst(a: Any) -> Any:
    """numpy -> nested lists with NaN/inf as None (strict JSON)."""
    arr = np.asarray(a)
    if arr.dtype == bool:
        return arr.tolist()
    if np.issubdtype(arr.dtype, np.integer):
        return arr.tolist()
    out = arr.astype(np.float64).tolist()

    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return x if math.isfinite(x) else None

    return fix(out)


def _arr(x: Any, shape: tuple[int, ...], what: str, dtype: Any = np.float64) -> np.ndarray:
    """Nested lists (None = NaN) -> array of the expected shape, or ImportFormatError."""
    try:
        if dtype is np.float64:
            arr = np.array(x, dtype=object)
            arr = np.where(arr == None, np.nan, arr).astype(np.float64)  # noqa: E711
        else:
            arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ImportFormatError(f"{what}: not a numeric array ({exc})") from exc
    if arr.shape != shape:
        raise ImportFormatError(f"{what}: shape {arr.shape}, expected {shape}")
    return arr


def _jsonable(x: Any) -> Any:
    """Model info and similar: keep JSON types, stringify the rest."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic, np.ndarray)):
        return _lst(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)


def _fit_dict(stage: StageResult) -> dict[str, Any] | None:
    fa = fit_arrays(stage)
    if fa is None:
        return None
    k = fa["score"].shape[0]
    return {
        "lifted": bool(fa["lifted"]),
        "best_component": int(fa["component"]),
        "pose_3d": _lst(fa["pose_3d"]),
        "joints_2d": _lst(fa["joints_2d"]),
        "lift_centre": _lst(fa["centre"]) if "centre" in fa else None,
        "lift_norm": _lst(fa["norm"]) if "norm" in fa else None,
        "components": [
            {
                "index": i,
                "pose_3d": _lst(fa["comp_pose_3d"][i]),
                "joints_2d": _lst(fa["comp_joints_2d"][i]),
                "score": _lst(fa["score"][i]),
                "residual": _lst(fa["residual"][i]),
                "scale": _lst(fa["scale"][i]),
                "yaw": _lst(fa["yaw"][i]),
                "capped": bool(fa["capped"][i]),
                **({"coeffs": _lst(fa["coeffs"][i])} if "coeffs" in fa else {}),
            }
            for i in range(k)
        ],
    }


def result_to_dict(result: EstimateResult) -> dict[str, Any]:
    """The JSON document (a dict of JSON types) for one result."""
    check_result(result)
    persons = []
    for person in result.persons:
        persons.append(
            {
                "box": _lst(person.box),
                "centre": _lst(person.centre),
                "source": person.source,
                "score": _lst(person.score),
                "map_to_image": _lst(person.map_to_image),
                "stages": [
                    {
                        "index": int(stage.index),
                        "seconds": float(stage.seconds),
                        "joints_2d": _lst(stage.joints_2d),
                        "confidence": _lst(stage.confidence),
                        "visible": _lst(np.asarray(stage.visible, dtype=bool)),
                        "map_shape": list(np.shape(stage.cnn_maps)[1:]),
                        "fit": _fit_dict(stage),
                    }
                    for stage in person.stages
                ],
            }
        )
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "generator": {"name": "poseviewer", "version": __version__},
        "units": UNITS,
        "coordinate_frames": COORDINATE_FRAMES,
        "joint_sets": {"joints_2d": "cpm14", "pose_3d": "h36m17",
                       "cpm14": _skeleton_info(CPM14), "h36m17": _skeleton_info(H36M17)},
        "image": {
            "path": result.image_path,
            "width": int(result.image_size[0]),
            "height": int(result.image_size[1]),
        },
        "model": _jsonable(result.model),
        "device": result.device,
        "timings": _jsonable(result.timings),
        "messages": list(result.messages),
        "persons": persons,
    }


def _fit_from_dict(d: dict[str, Any], where: str) -> Any:
    comps = d.get("components")
    if not isinstance(comps, list) or not comps:
        raise ImportFormatError(f"{where}.fit.components: missing or empty")
    k = len(comps)

    def col(key: str) -> np.ndarray:
        vals = [c.get(key) for c in comps]
        return _arr(vals, (k,), f"{where}.fit.components[*].{key}")

    try:
        arrays = {
            "lifted": np.array(bool(d["lifted"])),
            "component": np.array(int(d["best_component"]), dtype=np.int64),
            "pose_3d": _arr(d["pose_3d"], (17, 3), f"{where}.fit.pose_3d"),
            "joints_2d": _arr(d["joints_2d"], (17, 2), f"{where}.fit.joints_2d"),
            "comp_pose_3d": _arr([c["pose_3d"] for c in comps], (k, 17, 3),
                                 f"{where}.fit.components[*].pose_3d"),
            "comp_joints_2d": _arr([c["joints_2d"] for c in comps], (k, 17, 2),
                                   f"{where}.fit.components[*].joints_2d"),
            "score": col("score"),
            "residual": col("residual"),
            "scale": col("scale"),
            "yaw": col("yaw"),
        }
        if d.get("lift_centre") is not None:
            arrays["centre"] = _arr(d["lift_centre"], (2,), f"{where}.fit.lift_centre")
        if "lift_norm" in d:
            arrays["norm"] = _arr(d["lift_norm"], (), f"{where}.fit.lift_norm")
        if all("coeffs" in c for c in comps):
            arrays["coeffs"] = _arr([c["coeffs"] for c in comps], (k, 28),
                                    f"{where}.fit.components[*].coeffs")
    except KeyError as exc:
        raise ImportFormatError(f"{where}.fit: missing key {exc}") from exc
    return make_fit(arrays)


def result_from_dict(doc: dict[str, Any]) -> EstimateResult:
    """Rebuild an EstimateResult from our JSON document (belief maps are not stored: the
    stages get empty (14, 0, 0) maps and ``projected_maps = None``)."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ImportFormatError(f"not a poseviewer result (expected \"schema\": \"{SCHEMA}\")")
    version = doc.get("version")
    if version != VERSION:
        raise ImportFormatError(f"unsupported poseviewer.result version {version!r} "
                                f"(this poseviewer reads version {VERSION})")
    try:
        persons = []
        for p, pd in enumerate(doc["persons"]):
            stages = []
            for t, sd in enumerate(pd["stages"]):
                where = f"persons[{p}].stages[{t}]"
                empty = np.zeros((14, 0, 0), dtype=np.float32)
                fit = None if sd.get("fit") is None else _fit_from_dict(sd["fit"], where)
                stages.append(
                    StageResult(
                        index=int(sd["index"]),
                        cnn_maps=empty,
                        projected_maps=None,
                        fused_maps=empty,
                        joints_2d=_arr(sd["joints_2d"], (14, 2), f"{where}.joints_2d"),
                        confidence=_arr(sd["confidence"], (14,), f"{where}.confidence"),
                        visible=_arr(sd["visible"], (14,), f"{where}.visible", bool),
                        fit=fit,
                        seconds=float(sd.get("seconds", 0.0)),
                    )
                )
            persons.append(
                PersonResult(
                    box=_arr(pd["box"], (4,), f"persons[{p}].box"),
                    centre=_arr(pd["centre"], (2,), f"persons[{p}].centre"),
                    source=str(pd["source"]),
                    map_to_image=_arr(pd["map_to_image"], (2, 3), f"persons[{p}].map_to_image"),
                    stages=stages,
                    score=float(pd.get("score", 1.0)),
                )
            )
        image = doc["image"]
        return EstimateResult(
            image_size=(int(image["width"]), int(image["height"])),
            persons=persons,
            timings={str(k): float(v) for k, v in doc.get("timings", {}).items()
                     if isinstance(v, (int, float))},
            model=dict(doc.get("model") or {}),
            device=str(doc.get("device", "")),
            image_path=image.get("path"),
            messages=[str(m) for m in doc.get("messages", [])],
        )
    except KeyError as exc:
        raise ImportFormatError(f"poseviewer result: missing key {exc}") from exc
    except TypeError as exc:
        raise ImportFormatError(f"poseviewer result: malformed content ({exc})") from exc


def write_json(result: EstimateResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` as our versioned JSON (atomic)."""
    text = json.dumps(result_to_dict(result), indent=1, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike[str]) -> EstimateResult:
    """Read a file written by :func:`write_json` back into an EstimateResult."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return result_from_dict(doc)
    except ImportFormatError as exc:
        raise ImportFormatError(f"{path}: {exc}") from exc
