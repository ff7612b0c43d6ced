"""NPZ export: fixed-shape numpy arrays, no pickled objects (``np.load(...,
allow_pickle=False)`` reads it), one key per field of the field table of
:mod:`poseviewer.result`. Shapes use P persons, T stages, K components; see
docs/export-format.md for every key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from poseviewer.export._io import (
    DEFAULT_FRAME,
    ImportFormatError,
    atomic_write_with,
    check_result,
    fit_from_values,
    fit_values,
    in_frame,
)
from poseviewer.export.json_format import (
    SCHEMA,
    VERSION,
    resolved_image_path,
    result_to_dict,
    stored_image_path,
)
from poseviewer.result import (
    COMPONENT_FIELDS,
    FIT_FIELDS,
    PERSON_FIELDS,
    STAGE_FIELDS,
    EstimateResult,
    FieldSpec,
    PersonResult,
    StageResult,
)
from poseviewer.skeleton import CPM14, H36M17

_FILL = {"f8": np.nan, "f4": np.nan, "bool": False, "i8": -1}


def _blank(spec: FieldSpec, lead: tuple[int, ...], dims: dict[str, int]) -> np.ndarray:
    return np.full(lead + spec.concrete_shape(dims), _FILL[spec.dtype], dtype=spec.np_dtype)


def result_arrays(result: EstimateResult, save_maps: bool = False) -> dict[str, np.ndarray]:
    """The NPZ content as a dict of arrays (all persons must have the same number of stages),
    one key per field of the result's field table (see docs/export-format.md).

    ``save_maps`` adds cnn_maps / fused_maps / projected_maps (P, T, J, Hm, Wm) float32
    when every stage's maps share one shape (projected maps NaN where absent).
    """
    dims = check_result(result)
    dims.setdefault("J", len(CPM14.joints))
    dims.setdefault("J3", len(H36M17.joints))
    dims.setdefault("K", 0)
    persons = result.persons
    p_n = len(persons)
    t_n = result.num_stages
    if any(len(p.stages) != t_n for p in persons):
        raise ValueError("persons have different numbers of stages; NPZ needs one T")
    lead = (p_n, t_n)
    out: dict[str, np.ndarray] = {s.npz_key: _blank(s, lead, dims) for s in STAGE_FIELDS}
    out["has_fit"] = np.zeros(lead, dtype=bool)
    fit_specs = [s for s in FIT_FIELDS + COMPONENT_FIELDS
                 if not s.optional or all(d in dims for d in s.shape if isinstance(d, str))]
    present: set[str] = set()
    for s in fit_specs:
        out[s.npz_key] = _blank(s, lead, dims)
    for p, person in enumerate(persons):
        for t, stage in enumerate(person.stages):
            for s in STAGE_FIELDS:
                if getattr(stage, s.name) is not None:
                    out[s.npz_key][p, t] = getattr(stage, s.name)
                    present.add(s.npz_key)
            vals = fit_values(stage.fit)
            if vals is None:
                continue
            out["has_fit"][p, t] = True
            merged = {("fit", k): v for k, v in vals[0].items()}
            merged.update({("comp", k): v for k, v in vals[1].items()})
            for s in fit_specs:
                key = ("fit" if s in FIT_FIELDS else "comp", s.name)
                if key in merged:
                    out[s.npz_key][p, t] = merged[key]
                    present.add(s.npz_key)
    for s in fit_specs + [s for s in STAGE_FIELDS if s.optional]:
        if s.optional and s.npz_key not in present:  # optional fields no stage has
            del out[s.npz_key]
    for s in PERSON_FIELDS:
        values = [getattr(p, s.name) for p in persons]
        if s.optional:
            if all(v is None for v in values):
                continue
            values = [_FILL[s.dtype] if v is None else v for v in values]
        out[s.npz_key] = np.array(values, dtype=s.np_dtype
                                  ).reshape((p_n,) + s.concrete_shape(dims))
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
              save_maps: bool = False, frame: str = DEFAULT_FRAME) -> Path:
    """Write ``result`` as an uncompressed NPZ of plain arrays (atomic); 3D poses in
    ``frame`` ('pelvis', default, or 'lifting'), the image path relative to the file."""
    arrays = result_arrays(in_frame(result, frame), save_maps=save_maps)
    meta = json.loads(str(arrays["meta_json"]))
    meta["image"]["path"] = stored_image_path(result.image_path, path)
    arrays["meta_json"] = np.array(json.dumps(meta, allow_nan=False), dtype=np.str_)
    return atomic_write_with(path, lambda fh: np.savez(fh, **arrays))


def load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an NPZ file (no pickles); ``ImportFormatError`` when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise ImportFormatError(f"{path}: not a readable NPZ file ({exc})") from exc


def read_npz(path: str | os.PathLike[str]) -> EstimateResult:
    """Read a file written by :func:`write_npz` back into an EstimateResult (maps when saved,
    else empty (J, 0, 0) maps)."""
    path = Path(path)
    d = load_npz_arrays(path)
    try:
        meta = json.loads(str(d["meta_json"]))
    except KeyError as exc:
        raise ImportFormatError(f"{path}: not a poseviewer NPZ (no meta_json)") from exc
    if meta.get("schema") != SCHEMA or meta.get("version") != VERSION:
        raise ImportFormatError(f"{path}: not a poseviewer.result version {VERSION} NPZ")
    return result_from_arrays(d, meta, path)


def result_from_arrays(d: dict[str, np.ndarray], meta: dict, path: Path) -> EstimateResult:
    """An EstimateResult from the arrays of :func:`result_arrays` and its decoded
    ``meta_json`` (``path``: the file, for messages and the image path)."""
    try:
        p_n, t_n = d["has_fit"].shape
        persons = []
        for p in range(p_n):
            stages = []
            for t in range(t_n):
                fit = None
                if d["has_fit"][p, t]:
                    fit = fit_from_values(
                        {s.name: d[s.npz_key][p, t] for s in FIT_FIELDS if s.npz_key in d},
                        {s.name: d[s.npz_key][p, t] for s in COMPONENT_FIELDS
                         if s.npz_key in d})
                kw = {s.name: d[s.npz_key][p, t] for s in STAGE_FIELDS if s.npz_key in d}
                for s in STAGE_FIELDS:  # optional: absent, or all NaN where a stage lacks it
                    if s.optional and (kw.get(s.name) is None or np.isnan(kw[s.name]).all()):
                        kw[s.name] = None
                kw["seconds"] = float(kw["seconds"])
                empty = np.zeros((len(kw["joints_2d"]), 0, 0), dtype=np.float32)
                has_maps = "cnn_maps" in d
                proj = d["projected_maps"][p, t] if has_maps else None
                stages.append(StageResult(
                    index=t,
                    cnn_maps=d["cnn_maps"][p, t] if has_maps else empty,
                    projected_maps=None if proj is None or np.isnan(proj).all() else proj,
                    fused_maps=d["fused_maps"][p, t] if has_maps else empty,
                    fit=fit, **kw))
            kw = {s.name: d[s.npz_key][p] for s in PERSON_FIELDS if s.npz_key in d}
            kw["source"], kw["score"] = str(kw["source"]), float(kw["score"])
            if "track_id" in kw:
                kw["track_id"] = None if int(kw["track_id"]) < 0 else int(kw["track_id"])
            persons.append(PersonResult(stages=stages, **kw))
    except KeyError as exc:
        raise ImportFormatError(f"{path}: not a poseviewer NPZ (no {exc})") from exc
    image = meta.get("image", {})
    return EstimateResult(
        image_size=(int(d["image_size"][0]), int(d["image_size"][1])),
        persons=persons,
        timings={k: float(v) for k, v in meta.get("timings", {}).items()
                 if isinstance(v, (int, float))},
        model=dict(meta.get("model") or {}),
        device=str(meta.get("device", "")),
        image_path=resolved_image_path(image.get("path"), path),
        messages=list(meta.get("messages", [])),
        frame_3d=str(meta.get("frame_3d", "lifting")),
    )
