"""NPZ export: fixed-shape numpy arrays, no pickled objects (``np.load(...,
allow_pickle=False)`` reads it). Shapes use P persons, T stages, K components; see
docs/export-format.md for every key."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.export._io import (
    ImportFormatError,
    atomic_write_with,
    check_result,
    fit_arrays,
    make_fit,
    num_components,
)
from poseviewer.export.json_format import SCHEMA, VERSION, result_to_dict
from poseviewer.result import EstimateResult, PersonResult, StageResult
from poseviewer.skeleton import CPM14, H36M17

#: per-stage fit arrays: npz key -> (fit_arrays key, trailing shape given K, fill)
_FIT_KEYS: dict[str, tuple[str, Any]] = {
    "pose_3d": ("pose_3d", lambda k: (17, 3)),
    "fit_joints_2d": ("joints_2d", lambda k: (17, 2)),
    "components_pose_3d": ("comp_pose_3d", lambda k: (k, 17, 3)),
    "components_joints_2d": ("comp_joints_2d", lambda k: (k, 17, 2)),
    "components_score": ("score", lambda k: (k,)),
    "components_residual": ("residual", lambda k: (k,)),
    "components_scale": ("scale", lambda k: (k,)),
    "components_yaw": ("yaw", lambda k: (k,)),
    "components_coeffs": ("coeffs", lambda k: (k, 28)),
    "fit_centre": ("centre", lambda k: (2,)),
    "fit_norm": ("norm", lambda k: ()),
}


def result_arrays(result: EstimateResult, save_maps: bool = False) -> dict[str, np.ndarray]:
    """The NPZ content as a dict of arrays (all persons must have the same number of stages).

    ``save_maps`` adds cnn_maps / fused_maps / projected_maps (P, T, 14, Hm, Wm) float32
    when every stage's maps share one shape (projected maps NaN where absent).
    """
    check_result(result)
    persons = result.persons
    p_n = len(persons)
    t_n = result.num_stages
    if any(len(p.stages) != t_n for p in persons):
        raise ValueError("persons have different numbers of stages; NPZ needs one T")
    k = num_components(result)
    out: dict[str, np.ndarray] = {
        "joints_2d": np.full((p_n, t_n, 14, 2), np.nan),
        "confidence": np.full((p_n, t_n, 14), np.nan),
        "visible": np.zeros((p_n, t_n, 14), dtype=bool),
        "stage_seconds": np.zeros((p_n, t_n)),
        "has_fit": np.zeros((p_n, t_n), dtype=bool),
        "lifted": np.zeros((p_n, t_n), dtype=bool),
        "best_component": np.full((p_n, t_n), -1, dtype=np.int64),
        "components_capped": np.zeros((p_n, t_n, k), dtype=bool),
    }
    for key, (_, shape) in _FIT_KEYS.items():
        out[key] = np.full((p_n, t_n) + shape(k), np.nan)
    for p, person in enumerate(persons):
        for t, stage in enumerate(person.stages):
            out["joints_2d"][p, t] = stage.joints_2d
            out["confidence"][p, t] = stage.confidence
            out["visible"][p, t] = stage.visible
            out["stage_seconds"][p, t] = stage.seconds
            fa = fit_arrays(stage)
            if fa is None:
                continue
            if fa["score"].shape[0] != k:
                raise ValueError("stages have different numbers of mixture components")
            out["has_fit"][p, t] = True
            out["lifted"][p, t] = fa["lifted"]
            out["best_component"][p, t] = fa["component"]
            out["components_capped"][p, t] = fa["capped"]
            for key, (src, _) in _FIT_KEYS.items():
                if src in fa:
                    out[key][p, t] = fa[src]
    out["boxes"] = np.array([p.box for p in persons], dtype=np.float64).reshape(p_n, 4)
    out["centres"] = np.array([p.centre for p in persons], dtype=np.float64).reshape(p_n, 2)
    out["person_scores"] = np.array([p.score for p in persons], dtype=np.float64)
    out["person_sources"] = np.array([p.source for p in persons], dtype=np.str_)
    out["map_to_image"] = np.array([p.map_to_image for p in persons],
                                   dtype=np.float64).reshape(p_n, 2, 3)
    out["image_size"] = np.array(result.image_size, dtype=np.int64)
    out["cpm14_names"] = np.array(CPM14.joints, dtype=np.str_)
    out["cpm14_parents"] = CPM14.parents()
    out["h36m17_names"] = np.array(H36M17.joints, dtype=np.str_)
    out["h36m17_parents"] = H36M17.parents()
    # everything else (schema, units, frames, model, timings, messages) as one JSON string
    meta = result_to_dict(result)
    meta.pop("persons")
    out["meta_json"] = np.array(json.dumps(meta, allow_nan=False), dtype=np.str_)
    if save_maps and p_n and t_n:
        shapes = {np.shape(s.cnn_maps) for p in persons for s in p.stages}
        if len(shapes) == 1 and next(iter(shapes))[1:] != (0, 0):
            shape = next(iter(shapes))
            out["cnn_maps"] = np.array([[s.cnn_maps for s in p.stages] for p in persons],
                                       dtype=np.float32)
            out["fused_maps"] = np.array([[s.fused_maps for s in p.stages] for p in persons],
                                         dtype=np.float32)
            proj = np.full((p_n, t_n) + shape, np.nan, dtype=np.float32)
            for p, person in enumerate(persons):
                for t, s in enumerate(person.stages):
                    if s.projected_maps is not None:
                        proj[p, t] = s.projected_maps
            out["projected_maps"] = proj
    return out


def write_npz(result: EstimateResult, path: str | os.PathLike[str],
              save_maps: bool = False) -> Path:
    """Write ``result`` as an uncompressed NPZ of plain arrays (atomic)."""
    arrays = result_arrays(result, save_maps=save_maps)
    return atomic_write_with(path, lambda fh: np.savez(fh, **arrays))


def read_npz(path: str | os.PathLike[str]) -> EstimateResult:
    """Read a file written by :func:`write_npz` back into an EstimateResult (maps when saved,
    else empty (14, 0, 0) maps)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise ImportFormatError(f"{path}: not a readable NPZ file ({exc})") from exc
    try:
        meta = json.loads(str(d["meta_json"]))
    except KeyError as exc:
        raise ImportFormatError(f"{path}: not a poseviewer NPZ (no meta_json)") from exc
    if meta.get("schema") != SCHEMA or meta.get("version") != VERSION:
        raise ImportFormatError(f"{path}: not a poseviewer.result version {VERSION} NPZ")
    p_n, t_n = d["lifted"].shape
    empty = np.zeros((14, 0, 0), dtype=np.float32)
    persons = []
    for p in range(p_n):
        stages = []
        for t in range(t_n):
            fit = None
            if d["has_fit"][p, t]:
                arrays = {src: d[key][p, t] for key, (src, _) in _FIT_KEYS.items()}
                arrays["lifted"] = d["lifted"][p, t]
                arrays["component"] = d["best_component"][p, t]
                fit = make_fit(arrays)
            has_maps = "cnn_maps" in d
            proj = d["projected_maps"][p, t] if has_maps else None
            stages.append(StageResult(
                index=t,
                cnn_maps=d["cnn_maps"][p, t] if has_maps else empty,
                projected_maps=None if proj is None or np.isnan(proj).all() else proj,
                fused_maps=d["fused_maps"][p, t] if has_maps else empty,
                joints_2d=d["joints_2d"][p, t],
                confidence=d["confidence"][p, t],
                visible=d["visible"][p, t],
                fit=fit,
                seconds=float(d["stage_seconds"][p, t]),
            ))
        persons.append(PersonResult(
            box=d["boxes"][p], centre=d["centres"][p], source=str(d["person_sources"][p]),
            map_to_image=d["map_to_image"][p], stages=stages,
            score=float(d["person_scores"][p]),
        ))
    image = meta.get("image", {})
    return EstimateResult(
        image_size=(int(d["image_size"][0]), int(d["image_size"][1])),
        persons=persons,
        timings={k: float(v) for k, v in meta.get("timings", {}).items()
                 if isinstance(v, (int, float))},
        model=dict(meta.get("model") or {}),
        device=str(meta.get("device", "")),
        image_path=image.get("path"),
        messages=list(meta.get("messages", [])),
    )
