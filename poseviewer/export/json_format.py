"""Our JSON format (``"schema": "poseviewer.result"``, version 1), following the field table
of :mod:`poseviewer.result`; see docs/export-format.md."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.export._io import (
    DEFAULT_FRAME,
    ImportFormatError,
    atomic_write_text,
    bind,
    check_result,
    fit_from_values,
    fit_values,
    in_frame,
)
from poseviewer.result import (
    COMPONENT_FIELDS,
    FIT_FIELDS,
    FRAMES_3D,
    PERSON_FIELDS,
    STAGE_FIELDS,
    EstimateResult,
    FieldSpec,
    Fit,
    PersonResult,
    StageResult,
)
from poseviewer.skeleton import CPM14, H36M17, Skeleton
from poseviewer.version import __version__

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
    "orthographic camera looking along +y.",
}

#: The origin of the 3D poses, by ``frame_3d``.
POSE_FRAMES = {
    "pelvis": "Root-relative: every pose (the best one and each component's) has its pelvis "
    "(joint 0) at the origin.",
    "lifting": "The lifting's own frame: the origin is NOT the pelvis; it lies within about "
    "55 mm of the joint centroid for uncapped components (with release_exact lifting, "
    "components whose scale was capped, scale = -0.001, are shifted in y by tens of metres).",
}


def stored_image_path(image_path: str | None, out: str | os.PathLike[str]) -> str | None:
    """The image path as a file at ``out`` stores it: relative to ``out``'s folder (so it
    resolves wherever the folder is moved with its photos), absolute when no relative path
    exists (another drive)."""
    if not image_path:
        return image_path
    src = Path(image_path).resolve()
    try:
        return Path(os.path.relpath(src, Path(out).resolve().parent)).as_posix()
    except ValueError:
        return str(src)


def resolved_image_path(stored: str | None, src: str | os.PathLike[str]) -> str | None:
    """The image path a file at ``src`` stores, resolved from ``src``'s folder."""
    if not stored or Path(stored).is_absolute():
        return stored
    return os.path.normpath(Path(src).resolve().parent / stored)


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
    f = arr.astype(np.float64)
    if f.size == 0 or np.isfinite(f).all():  # nothing to replace: no walk over the lists
        return f.tolist()
    out = f.tolist()

    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return x if math.isfinite(x) else None

    return fix(out)


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
    vals = fit_values(stage.fit)
    if vals is None:
        return None
    fit, comps = vals
    k = comps["score"].shape[0]
    out: dict[str, Any] = {s.json_key: _lst(fit[s.name]) for s in FIT_FIELDS if s.name in fit}
    out["components"] = [
        {"index": i, **{s.json_key: _lst(comps[s.name][i]) for s in COMPONENT_FIELDS
                        if s.name in comps}}
        for i in range(k)
    ]
    return out


def result_to_dict(result: EstimateResult) -> dict[str, Any]:
    """The JSON document (a dict of JSON types) for one result, as it is (see
    :func:`write_json` for the frame of the 3D poses)."""
    check_result(result)
    persons = []
    for person in result.persons:
        pd: dict[str, Any] = {
            s.json_key: str(getattr(person, s.name)) if s.dtype == "str"
            else _lst(getattr(person, s.name)) for s in PERSON_FIELDS
            if not (s.optional and getattr(person, s.name) is None)}
        pd["stages"] = [
            {
                "index": int(stage.index),
                **{s.json_key: _lst(np.asarray(getattr(stage, s.name), dtype=s.np_dtype))
                   for s in STAGE_FIELDS
                   if not (s.optional and getattr(stage, s.name) is None)},
                "map_shape": list(np.shape(stage.cnn_maps)[1:]),
                "fit": _fit_dict(stage),
            }
            for stage in person.stages
        ]
        persons.append(pd)
    frames = dict(COORDINATE_FRAMES)
    frames["pose_3d"] = POSE_FRAMES[result.frame_3d] + " " + COORDINATE_FRAMES["pose_3d"]
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "generator": {"name": "poseviewer", "version": __version__},
        "units": UNITS,
        "coordinate_frames": frames,
        "frame_3d": result.frame_3d,
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


def _value(spec: FieldSpec, x: Any, dims: dict[str, int], where: str) -> Any:
    """A JSON value of field ``spec`` as an array (None = NaN), shape-checked."""
    if spec.dtype == "str":
        return str(x)
    try:
        if spec.dtype in ("f8", "f4"):
            arr = np.array(x, dtype=object)
            arr = np.where(arr == None, np.nan, arr).astype(np.float64)  # noqa: E711
        else:
            arr = np.asarray(x, dtype=spec.np_dtype)
    except (TypeError, ValueError) as exc:
        raise ImportFormatError(f"{where}: not a numeric array ({exc})") from exc
    bind(spec, arr, dims, where)
    return arr


def _fit_from_dict(d: dict[str, Any], where: str, dims: dict[str, int]) -> Fit:
    comps = d.get("components")
    if not isinstance(comps, list) or not comps:
        raise ImportFormatError(f"{where}.fit.components: missing or empty")
    try:
        fit = {}
        for s in FIT_FIELDS:
            if s.json_key not in d or (s.optional and s.shape and d[s.json_key] is None):
                if not s.optional:
                    raise KeyError(s.json_key)
                continue
            fit[s.name] = _value(s, d[s.json_key], dims, f"{where}.fit.{s.json_key}")
        values = {}
        for s in COMPONENT_FIELDS:
            if not all(s.json_key in c for c in comps):
                if not s.optional:
                    raise KeyError(s.json_key)
                continue
            values[s.name] = _value(s, [c[s.json_key] for c in comps], dims,
                                    f"{where}.fit.components[*].{s.json_key}")
    except KeyError as exc:
        raise ImportFormatError(f"{where}.fit: missing key {exc}") from exc
    return fit_from_values(fit, values)


def result_from_dict(doc: dict[str, Any]) -> EstimateResult:
    """Rebuild an EstimateResult from our JSON document (belief maps are not stored: the
    stages get empty (J, 0, 0) maps and ``projected_maps = None``)."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ImportFormatError(f"not a poseviewer result (expected \"schema\": \"{SCHEMA}\")")
    version = doc.get("version")
    if version != VERSION:
        raise ImportFormatError(f"unsupported poseviewer.result version {version!r} "
                                f"(this poseviewer reads version {VERSION})")
    frame = doc.get("frame_3d", "lifting")
    if frame not in FRAMES_3D:
        raise ImportFormatError(f"frame_3d {frame!r}: expected one of {', '.join(FRAMES_3D)}")
    dims: dict[str, int] = {}
    sets = doc.get("joint_sets")
    if isinstance(sets, dict):
        for sym, key in (("J", "cpm14"), ("J3", "h36m17")):
            names = (sets.get(key) or {}).get("names") if isinstance(sets.get(key), dict) else None
            if isinstance(names, list):
                dims[sym] = len(names)
    try:
        persons = []
        for p, pd in enumerate(doc["persons"]):
            stages = []
            for t, sd in enumerate(pd["stages"]):
                where = f"persons[{p}].stages[{t}]"
                fit = None if sd.get("fit") is None else _fit_from_dict(sd["fit"], where, dims)
                kw = {s.name: _value(s, sd[s.json_key], dims, f"{where}.{s.json_key}")
                      for s in STAGE_FIELDS if s.name != "seconds"
                      and not (s.optional and sd.get(s.json_key) is None)}
                empty = np.zeros((len(kw["joints_2d"]), 0, 0), dtype=np.float32)
                stages.append(StageResult(index=int(sd["index"]), cnn_maps=empty,
                                          projected_maps=None, fused_maps=empty, fit=fit,
                                          seconds=float(sd.get("seconds", 0.0)), **kw))
            kw = {s.name: _value(s, pd[s.json_key], dims, f"persons[{p}].{s.json_key}")
                  for s in PERSON_FIELDS if s.name != "score"
                  and not (s.optional and pd.get(s.json_key) is None)}
            if kw.get("track_id") is not None:
                kw["track_id"] = int(kw["track_id"])
            persons.append(PersonResult(stages=stages, score=float(pd.get("score", 1.0)), **kw))
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
            frame_3d=frame,
        )
    except KeyError as exc:
        raise ImportFormatError(f"poseviewer result: missing key {exc}") from exc
    except TypeError as exc:
        raise ImportFormatError(f"poseviewer result: malformed content ({exc})") from exc


def write_json(result: EstimateResult, path: str | os.PathLike[str],
               frame: str = DEFAULT_FRAME) -> Path:
    """Write ``result`` as our versioned JSON (atomic). 3D poses in ``frame``: 'pelvis'
    (root-relative, default) or 'lifting'; the image path relative to the file's folder."""
    doc = result_to_dict(in_frame(result, frame))
    doc["image"]["path"] = stored_image_path(result.image_path, path)
    text = json.dumps(doc, indent=1, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike[str]) -> EstimateResult:
    """Read a file written by :func:`write_json` back into an EstimateResult."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc})") from exc
    try:
        result = result_from_dict(doc)
    except ImportFormatError as exc:
        raise ImportFormatError(f"{path}: {exc}") from exc
    result.image_path = resolved_image_path(result.image_path, path)
    return result
