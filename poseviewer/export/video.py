"""Exports of a video's results (a :class:`~poseviewer.result.ResultSequence`): JSON, NPZ and
CSV with a frame axis and the person ids, COCO with one image entry per frame, and one BVH
animation per person id. Numpy only (no torch); every file written atomically.

The fields follow the field table of :mod:`poseviewer.result`: the per-image fields as for
a photo, plus :data:`~poseviewer.result.FRAME_FIELDS` per frame and
:data:`~poseviewer.result.TRACK_FIELDS` per person id (the animation the BVH encodes, see
:func:`track_animation`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.export._io import (
    DEFAULT_FRAME,
    ImportFormatError,
    atomic_write_text,
    atomic_write_with,
    fit_values,
    in_frame,
)
from poseviewer.export.bvh import bvh_parts
from poseviewer.export.coco import coco_dict
from poseviewer.export.csv_format import COLUMNS, csv_text
from poseviewer.export.json_format import _lst as _json_list
from poseviewer.export.json_format import (
    resolved_image_path,
    result_from_dict,
    result_to_dict,
    stored_image_path,
)
from poseviewer.export.npz_format import _FILL, load_npz_arrays, result_arrays, result_from_arrays
from poseviewer.result import (
    FRAME_FIELDS,
    PERSON_FIELDS,
    TRACK_FIELDS,
    EstimateResult,
    FieldSpec,
    ResultSequence,
)
from poseviewer.skeleton import H36M17

SEQUENCE_SCHEMA = "poseviewer.sequence"
SEQUENCE_VERSION = 1

#: Keys of a per-image JSON document that are the same for every frame: written once, at
#: the top of the sequence document.
_COMMON_KEYS = ("generator", "units", "coordinate_frames", "frame_3d", "joint_sets", "model",
                "device")


# ---- the animation of one person id ------------------------------------------------------
@dataclass
class TrackAnimation:
    """One person id's 3D animation; the fields are :data:`~poseviewer.result.TRACK_FIELDS`."""

    track_id: int
    frames: np.ndarray
    frame_index: np.ndarray
    frame_time: np.ndarray
    filled: np.ndarray
    bone_lengths: np.ndarray
    pose_3d: np.ndarray

    def frame_step(self, seq: ResultSequence | None = None) -> float:
        """Seconds per BVH frame: the median step of the track's frame times (one frame:
        the sequence's 1 / fps, else 1/30)."""
        steps = np.diff(self.frame_time)
        steps = steps[np.isfinite(steps) & (steps > 0)]
        if len(steps):
            return float(np.median(steps))
        if seq is not None and seq.fps:
            return 1.0 / float(seq.fps)
        return 1.0 / 30.0


def _person_pose(result: EstimateResult, track_id: int, stage: int) -> np.ndarray | None:
    """The (17, 3) root-relative best pose of ``track_id`` in ``result`` (None: absent or not
    lifted)."""
    for person in result.persons:
        if person.track_id == track_id:
            return lifted_pose(person, stage)
    return None


def lifted_pose(person: Any, stage: int = -1) -> np.ndarray | None:
    """The (17, 3) root-relative best pose of ``person`` at ``stage`` (None: not lifted)."""
    vals = fit_values(person.stages[stage].fit)
    if vals is None or not bool(vals[0]["lifted"]):
        return None
    pose = np.asarray(vals[0]["pose_3d"], dtype=np.float64)
    if not np.isfinite(pose).all():
        return None
    return pose - pose[0]


def _retarget(pose: np.ndarray, lengths: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """``pose``'s bone directions with ``lengths``, root at the origin (parents come first)."""
    out = np.zeros_like(pose)
    for j in range(1, len(parents)):
        v = pose[j] - pose[parents[j]]
        n = np.linalg.norm(v)
        out[j] = out[parents[j]] + (v / n * lengths[j] if n > 1e-9 else 0.0)
    return out


def track_animation(seq: ResultSequence, track_id: int, stage: int = -1) -> TrackAnimation:
    """The animation of ``track_id`` from its first to its last lifted frame: each frame's
    best pose (``stage``: default the last), root-relative, its bones scaled to one set of
    lengths for the clip (the median over the lifted frames); frames where the person was
    absent or not lifted are interpolated linearly (per joint, in time) between the nearest
    lifted frames and marked ``filled``. ValueError when the person was never lifted."""
    poses = [_person_pose(r, track_id, stage) for r in seq.frames]
    lifted = [i for i, p in enumerate(poses) if p is not None]
    if not lifted:
        raise ValueError(f"person {track_id} was never lifted: no animation")
    return animation_from_poses(track_id, np.array(lifted), np.stack([poses[i] for i in lifted]),
                                seq.frame_index, seq.frame_time)


def animation_from_poses(track_id: int, positions: np.ndarray, known: np.ndarray,
                         frame_index: Any, frame_time: Any) -> TrackAnimation:
    """The :class:`TrackAnimation` of one person from its lifted frames only: ``positions``
    (L,) ascending frame positions in the sequence, ``known`` (L, 17, 3) the root-relative
    best poses there; ``frame_index(i)`` / ``frame_time(i)`` give any position's frame
    number and time (what :func:`track_animation` does, from small arrays: the streamed
    exports keep these per id instead of the results)."""
    parents = H36M17.parents()
    if any(parents[j] >= j for j in range(1, len(parents))):  # pragma: no cover - data check
        raise ValueError("H36M-17 parents must precede their children")
    positions = np.asarray(positions, dtype=np.int64)
    if not len(positions):
        raise ValueError(f"person {track_id} was never lifted: no animation")
    first, last = int(positions[0]), int(positions[-1])
    frames = np.arange(first, last + 1)
    times = np.array([frame_time(int(i)) for i in frames], dtype=np.float64)
    if not np.isfinite(times).all():
        times = frames.astype(np.float64)
    have = np.zeros(len(frames), dtype=bool)
    have[positions - first] = True
    known = np.asarray(known, dtype=np.float64)
    lengths = np.r_[0.0, np.median(np.linalg.norm(known[:, 1:] - known[:, parents[1:]],
                                                  axis=-1), axis=0)]
    t_known = times[have]
    filled_poses = np.empty((len(frames), known.shape[1], 3))
    for j in range(known.shape[1]):
        for k in range(3):
            filled_poses[:, j, k] = np.interp(times, t_known, known[:, j, k])
    filled_poses[have] = known
    anim = np.stack([_retarget(p, lengths, parents) for p in filled_poses])
    return TrackAnimation(
        track_id=int(track_id), frames=frames.astype(np.int64),
        frame_index=np.array([frame_index(int(i)) for i in frames], dtype=np.int64),
        frame_time=times, filled=~have, bone_lengths=lengths, pose_3d=anim)


def track_animations(seq: ResultSequence, stage: int = -1) -> list[TrackAnimation]:
    """The animation of every person id that was lifted at least once, by id."""
    out = []
    for tid in seq.track_ids():
        try:
            out.append(track_animation(seq, tid, stage))
        except ValueError:
            continue
    return out


# ---- BVH -------------------------------------------------------------------------------------
def continuous_euler(values: np.ndarray) -> np.ndarray:
    """(F, 3 + 3 R) BVH channel values (root position, then (z, x, y) degrees per joint) made
    continuous over the frames: each triplet becomes the equivalent ZXY triplet
    ((z, x, y) or (z + 180, 180 - x, y + 180), plus multiples of 360) nearest the previous
    frame's, so no angle jumps by a turn or flips sign while the rotation moves little."""
    out = np.array(values, dtype=np.float64)
    for f in range(1, len(out)):
        prev = out[f - 1, 3:].reshape(-1, 3)
        cur = out[f, 3:].reshape(-1, 3)
        alt = np.stack([cur[:, 0] + 180.0, 180.0 - cur[:, 1], cur[:, 2] + 180.0], axis=1)
        best = []
        for cand in (cur, alt):
            c = cand + 360.0 * np.round((prev - cand) / 360.0)
            best.append(c)
        d0 = np.sum((best[0] - prev) ** 2, axis=1)
        d1 = np.sum((best[1] - prev) ** 2, axis=1)
        out[f, 3:] = np.where((d1 < d0)[:, None], best[1], best[0]).ravel()
    return out


def bvh_animation_text(poses: np.ndarray, frame_time: float) -> str:
    """BVH of an H36M-17 animation (F, 17, 3) in our frame (mm) whose bone lengths are the
    same in every frame (see :func:`track_animation`): the rest skeleton from the first
    frame, one motion line per frame, rotations continuous (:func:`continuous_euler`)."""
    poses = np.asarray(poses, dtype=np.float64)
    n = H36M17.num_joints
    if poses.ndim != 3 or poses.shape[1:] != (n, 3) or not len(poses):
        raise ValueError(f"poses have shape {poses.shape}, expected (F, {n}, 3) with F >= 1")
    if not (math.isfinite(frame_time) and frame_time > 0):
        raise ValueError(f"frame time must be positive, not {frame_time}")
    hierarchy, _ = bvh_parts(poses[0])
    values = continuous_euler(np.array([bvh_parts(p)[1] for p in poses]))
    lines = hierarchy + ["MOTION", f"Frames: {len(poses)}", f"Frame Time: {frame_time:.6f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in values]
    return "\n".join(lines) + "\n"


def write_track_bvh(seq: ResultSequence, path: str | os.PathLike[str], track_id: int,
                    stage: int = -1) -> Path:
    """Write person ``track_id``'s animation (:func:`track_animation`) as one BVH file
    (atomic); frame time from the video."""
    anim = track_animation(seq, track_id, stage)
    return atomic_write_text(path, bvh_animation_text(anim.pose_3d, anim.frame_step(seq)))


# ---- JSON ------------------------------------------------------------------------------------
def _lst(spec: FieldSpec, v: Any) -> Any:
    """A field's value as JSON (NaN as null)."""
    return _json_list(np.asarray(v, dtype=spec.np_dtype))


def track_to_dict(anim: TrackAnimation) -> dict[str, Any]:
    """One ``tracks`` entry of the sequence JSON (keys from the field table)."""
    return {s.json_key: _lst(s, getattr(anim, s.name)) for s in TRACK_FIELDS}


def frame_entry(doc: dict[str, Any], index: int, time: float,
                path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """One ``frames`` entry of the sequence JSON: the frame fields and the frame's result
    document ``doc`` (from ``result_to_dict``; its keys common to every frame are removed
    here, in place; the image path made relative to ``path``)."""
    for k in _COMMON_KEYS:
        doc.pop(k, None)
    doc.pop("schema", None)
    doc.pop("version", None)
    doc["image"]["path"] = stored_image_path(doc["image"]["path"], path) if path else \
        doc["image"]["path"]
    values = {"index": index, "time": time}
    return {**{s.json_key: _lst(s, values[s.name]) for s in FRAME_FIELDS}, "result": doc}


def common_entries(doc: dict[str, Any]) -> dict[str, Any]:
    """The keys of a frame's result document that the sequence JSON writes once."""
    return {k: doc[k] for k in _COMMON_KEYS if k in doc}


def sequence_to_dict(seq: ResultSequence, frame: str = DEFAULT_FRAME,
                     path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The sequence JSON document: the shared per-image keys once, one entry per frame (the
    frame fields and that frame's result document) and one per person id (``tracks``)."""
    if not len(seq):
        raise ValueError("the sequence holds no frames")
    docs = [result_to_dict(in_frame(r, frame)) for r in seq.frames]
    common = common_entries(docs[0])
    frames = [frame_entry(doc, seq.frame_index(i), seq.frame_time(i), path)
              for i, doc in enumerate(docs)]
    source = seq.source
    if source and path is not None and Path(source).exists():
        source = stored_image_path(source, path)
    return {
        "schema": SEQUENCE_SCHEMA, "version": SEQUENCE_VERSION, "source": source,
        "fps": seq.fps, "num_frames": len(seq), "smoothing": seq.smoothing,
        "messages": list(seq.messages), **common, "frames": frames,
        "tracks": [track_to_dict(a) for a in track_animations(seq)],
    }


def write_sequence_json(seq: ResultSequence, path: str | os.PathLike[str],
                        frame: str = DEFAULT_FRAME) -> Path:
    """Write the sequence as one JSON document (atomic); see :func:`sequence_to_dict`."""
    doc = sequence_to_dict(seq, frame, path)
    return atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def read_sequence_json(path: str | os.PathLike[str]) -> ResultSequence:
    """Read a file of :func:`write_sequence_json` back (tracks are derived data: recompute
    them with :func:`track_animations`)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SEQUENCE_SCHEMA:
        raise ImportFormatError(f"{path}: not a poseviewer sequence (expected \"schema\": "
                                f"\"{SEQUENCE_SCHEMA}\")")
    if doc.get("version") != SEQUENCE_VERSION:
        raise ImportFormatError(f"{path}: unsupported sequence version {doc.get('version')!r}")
    from poseviewer.export.json_format import SCHEMA, VERSION

    common = {k: doc[k] for k in _COMMON_KEYS if k in doc}
    results, fields = [], {s.name: [] for s in FRAME_FIELDS}
    try:
        for i, fd in enumerate(doc["frames"]):
            for s in FRAME_FIELDS:
                v = fd[s.json_key]
                fields[s.name].append(float("nan") if v is None else s.np_dtype(v).item())
            try:
                r = result_from_dict({"schema": SCHEMA, "version": VERSION, **common,
                                      **fd["result"]})
            except ImportFormatError as exc:
                raise ImportFormatError(f"{path}: frames[{i}]: {exc}") from exc
            r.image_path = resolved_image_path(r.image_path, path)
            results.append(r)
    except (KeyError, TypeError) as exc:
        raise ImportFormatError(f"{path}: malformed sequence ({exc!r})") from exc
    source = doc.get("source")
    return ResultSequence(frames=results, times=fields["time"], indices=fields["index"],
                          source=resolved_image_path(source, path) if source else source,
                          fps=doc.get("fps"), smoothing=doc.get("smoothing"),
                          messages=[str(m) for m in doc.get("messages", [])])


# ---- NPZ -------------------------------------------------------------------------------------
_PERSON_KEYS = {s.npz_key for s in PERSON_FIELDS}
_SHARED_KEYS = ("image_size", "cpm14_names", "cpm14_parents", "h36m17_names",
                "h36m17_parents")


def _fill_for(arr: np.ndarray) -> Any:
    if arr.dtype.kind == "U":
        return ""
    return {"f": np.nan, "b": False, "i": -1}[arr.dtype.kind]


def sequence_arrays(seq: ResultSequence, frame: str = DEFAULT_FRAME) -> dict[str, np.ndarray]:
    """The sequence NPZ content: every per-image key of :func:`~poseviewer.export.npz_format.
    result_arrays` with the frames first (N, P, ...; people padded to the most in a frame),
    ``num_persons`` (N,), the frame fields, the track fields (R, F padded) and the metadata
    as JSON strings (``frame_meta_json`` per frame, ``sequence_json``)."""
    if not len(seq):
        raise ValueError("the sequence holds no frames")
    per = [result_arrays(in_frame(r, frame)) for r in seq.frames]
    n = len(per)
    p_max = max(len(r.persons) for r in seq.frames)
    t_max = max(r.num_stages for r in seq.frames)
    keys: dict[str, np.ndarray] = {}
    for d in per:  # the shape and dtype of every key, from a frame that has people
        for k, v in d.items():
            if k in _SHARED_KEYS or k == "meta_json":
                continue
            if k not in keys or (v.shape[0] and not keys[k].shape[0]):
                keys[k] = v
    out: dict[str, np.ndarray] = {}
    for k, ref in keys.items():
        tail = ref.shape[1:] if k in _PERSON_KEYS else ref.shape[2:]
        lead = (n, p_max) if k in _PERSON_KEYS else (n, p_max, t_max)
        dtype = ref.dtype if ref.dtype.kind != "U" else \
            np.result_type(*[d[k].dtype for d in per if k in d])
        arr = np.full(lead + tail, _fill_for(ref), dtype=dtype)
        for f, d in enumerate(per):
            if k in d and d[k].size:
                v = d[k]
                arr[(f,) + tuple(slice(0, s) for s in v.shape)] = v
        out[k] = arr
    for k in _SHARED_KEYS:
        out[k] = per[0][k]
    out["num_persons"] = np.array([len(r.persons) for r in seq.frames], dtype=np.int64)
    out["frame_meta_json"] = np.array([str(d["meta_json"]) for d in per], dtype=np.str_)
    values = {"index": [seq.frame_index(i) for i in range(n)],
              "time": [seq.frame_time(i) for i in range(n)]}
    for s in FRAME_FIELDS:
        out[s.npz_key] = np.array(values[s.name], dtype=s.np_dtype)
    out.update(track_arrays(track_animations(seq)))
    out["sequence_json"] = np.array(json.dumps({
        "schema": SEQUENCE_SCHEMA, "version": SEQUENCE_VERSION, "source": seq.source,
        "fps": seq.fps, "smoothing": seq.smoothing, "messages": list(seq.messages)},
        allow_nan=False), dtype=np.str_)
    return out


def track_arrays(anims: list[TrackAnimation]) -> dict[str, np.ndarray]:
    """The NPZ's track fields: one row per animation, frames padded to the longest."""
    f_max = max((len(a.frames) for a in anims), default=0)
    dims = {"F": f_max, "J3": len(H36M17.joints)}
    out = {}
    for s in TRACK_FIELDS:
        arr = np.full((len(anims),) + s.concrete_shape(dims), _FILL[s.dtype],
                      dtype=s.np_dtype)
        for r, a in enumerate(anims):
            v = np.asarray(getattr(a, s.name), dtype=s.np_dtype)
            arr[(r,) + tuple(slice(0, x) for x in v.shape)] = v
        out[s.npz_key] = arr
    return out


def write_sequence_npz(seq: ResultSequence, path: str | os.PathLike[str],
                       frame: str = DEFAULT_FRAME) -> Path:
    """Write the sequence as an NPZ of plain arrays (atomic; ``allow_pickle=False`` reads
    it); see :func:`sequence_arrays`."""
    arrays = sequence_arrays(seq, frame)
    return atomic_write_with(path, lambda fh: np.savez(fh, **arrays))


def read_sequence_npz(path: str | os.PathLike[str]) -> ResultSequence:
    """Read a file of :func:`write_sequence_npz` back."""
    path = Path(path)
    d = load_npz_arrays(path)
    try:
        meta = json.loads(str(d["sequence_json"]))
        if meta.get("schema") != SEQUENCE_SCHEMA:
            raise KeyError("sequence_json schema")
        frames = []
        for f, p_n in enumerate(d["num_persons"]):
            fmeta = json.loads(str(d["frame_meta_json"][f]))
            t_n = int(d["has_fit"].shape[2]) if p_n else 0
            one: dict[str, np.ndarray] = {k: d[k] for k in _SHARED_KEYS}
            for k, v in d.items():
                if k in _SHARED_KEYS or v.ndim < 2 or v.shape[0] != len(d["num_persons"]):
                    continue
                if k.startswith("track_") or k in ("frame_meta_json",):
                    continue
                if k in _PERSON_KEYS:
                    one[k] = v[f, :p_n]
                elif v.ndim >= 3:
                    one[k] = v[f, :p_n, :t_n]
            frames.append(result_from_arrays(one, fmeta, path))
        return ResultSequence(
            frames=frames, times=[float(t) for t in d["frame_time"]],
            indices=[int(i) for i in d["frame_index"]], source=meta.get("source"),
            fps=meta.get("fps"), smoothing=meta.get("smoothing"),
            messages=list(meta.get("messages", [])))
    except KeyError as exc:
        raise ImportFormatError(f"{path}: not a poseviewer sequence NPZ (no {exc})") from exc


# ---- CSV, COCO -------------------------------------------------------------------------------
SEQUENCE_COLUMNS = ("frame", "frame_index", "frame_time", "person_id") + COLUMNS


def sequence_csv_text(seq: ResultSequence, frame: str = DEFAULT_FRAME,
                      image: str | None = None) -> str:
    """Long-format CSV of every frame: the photo columns (see
    :mod:`~poseviewer.export.csv_format`) after ``frame`` (position in the sequence),
    ``frame_index``, ``frame_time`` and ``person_id`` (the track id; empty when none)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SEQUENCE_COLUMNS)
    image = image if image is not None else (seq.source or "")
    for i, r in enumerate(seq.frames):
        w.writerows(frame_csv_rows(r, i, seq.frame_index(i), seq.frame_time(i), frame, image))
    return buf.getvalue()


def frame_csv_rows(result: EstimateResult, position: int, index: int, time: float,
                   frame: str, image: str) -> list[list[Any]]:
    """The sequence CSV's rows of one frame (see :func:`sequence_csv_text`)."""
    person_col = COLUMNS.index("person")
    rows = list(csv.reader(io.StringIO(csv_text(in_frame(result, frame), image))))[1:]
    out = []
    for row in rows:
        tid = result.persons[int(row[person_col])].track_id
        out.append([position, index, repr(time) if math.isfinite(time) else "",
                    "" if tid is None else tid] + row)
    return out


def write_sequence_csv(seq: ResultSequence, path: str | os.PathLike[str],
                       frame: str = DEFAULT_FRAME) -> Path:
    """Write the sequence as one long-format CSV (atomic)."""
    src = stored_image_path(seq.source, path) if seq.source and Path(seq.source).exists() \
        else seq.source
    return atomic_write_text(path, sequence_csv_text(seq, frame, src or ""))


def sequence_coco_dict(seq: ResultSequence, stage: int = -1) -> dict[str, Any]:
    """COCO keypoints of every frame: one image entry per frame (``file_name`` the video's
    name, plus ``frame_index``, ``frame_time`` and ``video``), annotations with the person's
    ``track_id``."""
    doc = coco_dict(list(seq.frames), stage)
    doc["images"], doc["annotations"] = [], []
    for i, r in enumerate(seq.frames):
        im, anns = frame_coco_entries(r, i, seq.frame_index(i), seq.frame_time(i), seq.source,
                                      len(doc["annotations"]), stage)
        doc["images"].append(im)
        doc["annotations"] += anns
    return doc


def frame_coco_entries(result: EstimateResult, position: int, index: int, time: float,
                       source: str | None, first_annotation: int, stage: int = -1
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The sequence COCO document's image entry of one frame and its annotations (ids
    ``first_annotation + 1, ...``; see :func:`sequence_coco_dict`)."""
    one = coco_dict([result], stage)
    im = one["images"][0]
    name = Path(source).name if source else "video"
    im.update({"id": position + 1, "file_name": name, "path": source, "video": source,
               "frame_index": index, "frame_time": time if math.isfinite(time) else None})
    anns = one["annotations"]
    for k, (a, p) in enumerate(zip(anns, result.persons, strict=True)):
        a.update({"id": first_annotation + k + 1, "image_id": position + 1,
                  "track_id": p.track_id})
    return im, anns


def write_sequence_coco(seq: ResultSequence, path: str | os.PathLike[str],
                        stage: int = -1) -> Path:
    """Write :func:`sequence_coco_dict` (atomic)."""
    return atomic_write_text(path, json.dumps(sequence_coco_dict(seq, stage), indent=1,
                                              allow_nan=False) + "\n")
