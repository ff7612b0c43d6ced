"""A video's exports written frame by frame, in bounded memory, resumable.

:class:`SequenceStreamWriter` takes one frame's result at a time and writes it at once to
files in a partial folder ``<out>/<stem>.partial/`` (the JSON frames as JSON Lines, the
CSV rows, the COCO entries, the NPZ arrays in chunks); per person id it keeps only that
id's lifted poses (a few small arrays) for the BVH animations and the ``tracks`` entries.
:meth:`~SequenceStreamWriter.finish` then writes each final file (``<stem>.json``,
``.csv``, ``.npz``, ``.coco.json``, ``<stem>_person<ID>.bvh``) atomically, streaming from
the partial files, and removes the partial folder: a final name never holds a half-written
file. The final files equal, field by field, what the all-at-once writers of
:mod:`poseviewer.export.video` write for the same frames.

Every ``checkpoint_every`` frames (and on :meth:`~SequenceStreamWriter.checkpoint`) the
partial files are flushed and ``state.json`` records their sizes, the frames done, the
per-id poses and the caller's own state (the tracker's and the filters', JSON types); a
writer opened with ``resume=True`` cuts the partial files back to the last checkpoint and
continues from there (:attr:`~SequenceStreamWriter.frames_done`,
:attr:`~SequenceStreamWriter.resume_state`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.atomic import atomic_open, atomic_write_text
from poseviewer.export._io import DEFAULT_FRAME, in_frame
from poseviewer.export.coco import coco_dict
from poseviewer.export.json_format import result_to_dict, stored_image_path
from poseviewer.export.npz_format import result_arrays
from poseviewer.export.video import (
    _PERSON_KEYS,
    _SHARED_KEYS,
    SEQUENCE_COLUMNS,
    SEQUENCE_SCHEMA,
    SEQUENCE_VERSION,
    _fill_for,
    animation_from_poses,
    bvh_animation_text,
    common_entries,
    frame_coco_entries,
    frame_csv_rows,
    frame_entry,
    lifted_pose,
    track_arrays,
    track_to_dict,
)
from poseviewer.result import FRAME_FIELDS, EstimateResult, ResultSequence
from poseviewer.skeleton import H36M17

#: The partial folder's suffix: ``<stem>.partial`` holds an unfinished video's output.
PARTIAL_SUFFIX = ".partial"
_STATE = "state.json"
_STATE_VERSION = 1
#: Formats the streamed writer writes (every sequence format).
STREAM_FORMATS = ("json", "csv", "npz", "bvh", "coco")


def partial_dir(out_dir: str | os.PathLike[str], stem: str) -> Path:
    """Where an unfinished video's output lives: ``<out>/<stem>.partial``."""
    return Path(out_dir) / f"{stem}{PARTIAL_SUFFIX}"


def final_paths(out_dir: str | os.PathLike[str], stem: str, formats: Iterable[str]
                ) -> list[Path]:
    """The final files of the given formats whose names are known before the run (BVH
    files are named by person id, so they are not listed)."""
    out = Path(out_dir)
    suffix = {"json": ".json", "csv": ".csv", "npz": ".npz", "coco": ".coco.json"}
    return [out / f"{stem}{suffix[f]}" for f in formats if f in suffix]


class _Track:
    """One person id's lifted frames: positions and root-relative best poses."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.poses: list[np.ndarray] = []


class SequenceStreamWriter:
    """Writes a video's exports one frame at a time (see the module docstring).

    ``formats``: any of :data:`STREAM_FORMATS`; ``frame``: the 3D frame ('pelvis' or
    'lifting'); ``source``/``fps``/``smoothing``: the sequence's metadata; ``stage``: the
    stage of the BVH animations and COCO keypoints (default the last).
    """

    def __init__(self, out_dir: str | os.PathLike[str], stem: str, formats: Iterable[str],
                 frame: str = DEFAULT_FRAME, *, source: str | None = None,
                 fps: float | None = None, smoothing: dict[str, Any] | None = None,
                 stage: int = -1, checkpoint_every: int = 50, resume: bool = False,
                 save_maps: bool = False) -> None:
        self.out = Path(out_dir)
        self.stem = stem
        self.formats = tuple(dict.fromkeys(formats))
        bad = [f for f in self.formats if f not in STREAM_FORMATS]
        if bad:
            raise ValueError(f"format(s) {', '.join(bad)} cannot hold a video's results")
        self.frame = frame
        self.source = source
        self.fps = fps
        self.smoothing = smoothing
        self.stage = stage
        self.save_maps = save_maps
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.partial = partial_dir(self.out, stem)
        self.frames_done = 0
        """Frames written so far (after a resume: those the partial folder held)."""
        self.resume_state: Any = None
        """The caller's state stored with the last checkpoint (None: a fresh start)."""
        self.resumed = False
        self._last_state: Any = None
        self._index: list[int] = []
        self._time: list[float] = []
        self._tracks: dict[int, _Track] = {}
        self._common: dict[str, Any] | None = None
        self._annotations = 0
        self._npz_chunks = 0
        self._npz_pending: list[dict[str, np.ndarray]] = []
        self._npz_keys: dict[str, dict[str, Any]] = {}
        self._p_max = 0
        self._t_max = 0
        self._files: dict[str, Any] = {}
        self._closed = False
        if resume and (self.partial / _STATE).is_file():
            self._restore()
        else:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True)
            self._open_files(truncate={})

    # ---- partial files ---------------------------------------------------------------------
    def _names(self) -> list[str]:
        names = []
        if "json" in self.formats:
            names.append("frames.jsonl")
        if "csv" in self.formats:
            names.append("rows.csv")
        if "coco" in self.formats:
            names += ["coco_images.jsonl", "coco_annotations.jsonl"]
        return names

    def _open_files(self, truncate: dict[str, int]) -> None:
        for name in self._names():
            path = self.partial / name
            fh = open(path, "a+b")  # noqa: SIM115 - kept open for the whole run
            if name in truncate:
                fh.truncate(int(truncate[name]))
            fh.seek(0, os.SEEK_END)
            self._files[name] = fh

    def _append(self, name: str, text: str) -> None:
        self._files[name].write(text.encode("utf-8"))

    @property
    def image_path(self) -> str:
        """The source as the CSV and JSON store it (relative to the output folder)."""
        src = self.source
        if src and Path(src).exists():
            return stored_image_path(src, self.out / f"{self.stem}.json") or src
        return src or ""

    # ---- one frame --------------------------------------------------------------------------
    def add(self, result: EstimateResult, index: int, time: float, state: Any = None) -> None:
        """Write one frame (its people carry their final ids). ``state``: what the caller
        needs to continue after this frame (JSON types), kept with the next checkpoint."""
        pos = self.frames_done
        self._index.append(int(index))
        self._time.append(float(time))
        r = in_frame(result, self.frame)
        if "json" in self.formats or self._common is None:
            doc = result_to_dict(r)
            if self._common is None:
                self._common = common_entries(doc)
            if "json" in self.formats:
                entry = frame_entry(doc, int(index), float(time), self.out / f"{self.stem}.json")
                self._append("frames.jsonl", json.dumps(entry, allow_nan=False) + "\n")
        if "csv" in self.formats:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(
                frame_csv_rows(result, pos, int(index), float(time), self.frame,
                               self.image_path))
            self._append("rows.csv", buf.getvalue())
        if "coco" in self.formats:
            im, anns = frame_coco_entries(result, pos, int(index), float(time), self.source,
                                          self._annotations, self.stage)
            self._annotations += len(anns)
            self._append("coco_images.jsonl", json.dumps(im, allow_nan=False) + "\n")
            for a in anns:
                self._append("coco_annotations.jsonl", json.dumps(a, allow_nan=False) + "\n")
        if "npz" in self.formats:
            self._npz_add(result_arrays(r, save_maps=self.save_maps))
        for person in result.persons:
            if person.track_id is None:
                continue
            pose = lifted_pose(person, self.stage)
            track = self._tracks.setdefault(int(person.track_id), _Track())
            if pose is not None and (not track.positions or track.positions[-1] != pos):
                track.positions.append(pos)
                track.poses.append(pose)
        self.frames_done += 1
        self._last_state = state
        if self.frames_done % self.checkpoint_every == 0:
            self.checkpoint()

    def _npz_add(self, d: dict[str, np.ndarray]) -> None:
        n_p = len(d["has_fit"])
        self._p_max = max(self._p_max, n_p)
        self._t_max = max(self._t_max, int(d["has_fit"].shape[1]))
        for k, v in d.items():
            if k in _SHARED_KEYS or k == "meta_json":
                continue
            info = self._npz_keys.get(k)
            tail = v.shape[1:] if k in _PERSON_KEYS else v.shape[2:]
            if info is None or (v.shape[0] and not info["people"]):
                old = None if info is None else info["dtype"]
                self._npz_keys[k] = info = {"tail": list(tail), "people": bool(v.shape[0]),
                                            "dtype": v.dtype.str}
                if old is not None and v.dtype.kind == "U":
                    info["dtype"] = np.result_type(np.dtype(old), v.dtype).str
            elif v.dtype.kind == "U":
                info["dtype"] = np.result_type(np.dtype(info["dtype"]), v.dtype).str
        self._npz_pending.append(d)

    # ---- checkpoints ------------------------------------------------------------------------
    def _write_npz_chunk(self) -> None:
        if not self._npz_pending:
            return
        arrays: dict[str, np.ndarray] = {}
        for j, d in enumerate(self._npz_pending):
            for k, v in d.items():
                if k in _SHARED_KEYS and (self._npz_chunks or j):
                    continue
                arrays[f"{j}:{k}"] = v
        arrays["count"] = np.array(len(self._npz_pending))
        path = self.partial / f"npz_{self._npz_chunks:06d}.npz"
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)
        self._npz_chunks += 1
        self._npz_pending = []

    def checkpoint(self, state: Any = None) -> None:
        """Flush the partial files and record where they end (``state``: the caller's
        state after the last frame written; default the one given to :meth:`add`)."""
        if state is not None:
            self._last_state = state
        self._write_npz_chunk()
        sizes = {}
        for name, fh in self._files.items():
            fh.flush()
            os.fsync(fh.fileno())
            sizes[name] = fh.tell()
        tracks = {}
        for tid, t in self._tracks.items():
            tracks[f"pos_{tid}"] = np.array(t.positions, dtype=np.int64)
            tracks[f"pose_{tid}"] = np.array(t.poses, dtype=np.float64).reshape(
                -1, H36M17.num_joints, 3)
        tracks["frame_index"] = np.array(self._index, dtype=np.int64)
        tracks["frame_time"] = np.array(self._time, dtype=np.float64)
        with atomic_open(self.partial / "tracks.npz", "wb") as fh:
            np.savez(fh, **tracks)
        state_doc = {
            "version": _STATE_VERSION, "formats": list(self.formats), "frame": self.frame,
            "source": self.source, "frames_done": self.frames_done, "sizes": sizes,
            "npz_chunks": self._npz_chunks, "npz_keys": self._npz_keys,
            "p_max": self._p_max, "t_max": self._t_max, "annotations": self._annotations,
            "common": self._common, "caller": self._last_state,
        }
        atomic_write_text(self.partial / _STATE, json.dumps(state_doc) + "\n")

    def _restore(self) -> None:
        doc = json.loads((self.partial / _STATE).read_text(encoding="utf-8"))
        if doc.get("version") != _STATE_VERSION:
            raise ValueError(f"{self.partial}: written by another version; delete it to "
                             "start again")
        if tuple(doc["formats"]) != self.formats or doc["frame"] != self.frame:
            raise ValueError(
                f"{self.partial}: the unfinished run wrote {','.join(doc['formats'])} "
                f"(frame {doc['frame']}); resume with the same --format and --frame, or "
                "delete it to start again")
        self.frames_done = int(doc["frames_done"])
        self._npz_chunks = int(doc["npz_chunks"])
        self._npz_keys = doc["npz_keys"]
        self._p_max, self._t_max = int(doc["p_max"]), int(doc["t_max"])
        self._annotations = int(doc["annotations"])
        self._common = doc["common"]
        self.resume_state = self._last_state = doc["caller"]
        self.resumed = True
        for extra in self.partial.glob("npz_*.npz"):
            if int(extra.stem.split("_")[1]) >= self._npz_chunks:
                extra.unlink()
        with np.load(self.partial / "tracks.npz", allow_pickle=False) as d:
            self._index = [int(i) for i in d["frame_index"]]
            self._time = [float(t) for t in d["frame_time"]]
            for k in d.files:
                if k.startswith("pos_"):
                    tid = int(k[4:])
                    t = self._tracks.setdefault(tid, _Track())
                    t.positions = [int(p) for p in d[k]]
                    t.poses = list(d[f"pose_{tid}"])
        self._open_files(truncate=doc["sizes"])

    def abort(self) -> Path:
        """Stop writing (an interrupted run): checkpoint what was written and keep it in
        the partial folder, which is returned."""
        if not self._closed:
            self.checkpoint()
        self._close_files()
        return self.partial

    def discard(self) -> None:
        """Stop writing and remove the partial folder (nothing worth keeping)."""
        self._close_files()
        shutil.rmtree(self.partial, ignore_errors=True)

    def _close_files(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}
        self._closed = True

    # ---- the final files --------------------------------------------------------------------
    def _anims(self) -> list[Any]:
        out = []
        for tid in sorted(self._tracks):
            t = self._tracks[tid]
            if t.positions:
                out.append(animation_from_poses(
                    tid, np.array(t.positions), np.stack(t.poses),
                    lambda i: self._index[i], lambda i: self._time[i]))
        return out

    def finish(self, messages: Iterable[str] = ()) -> list[Path]:
        """Write every final file (each atomically) and remove the partial folder; returns
        the files written. ValueError when no frame was written."""
        if not self.frames_done:
            self._close_files()
            shutil.rmtree(self.partial, ignore_errors=True)
            raise ValueError("the sequence holds no frames")
        self._write_npz_chunk()
        for fh in self._files.values():
            fh.flush()
        messages = [str(m) for m in messages]
        anims = self._anims()
        written: list[Path] = []
        for name in self.formats:
            if name == "json":
                written.append(self._finish_json(messages, anims))
            elif name == "csv":
                written.append(self._finish_csv())
            elif name == "npz":
                written.append(self._finish_npz(messages, anims))
            elif name == "coco":
                written.append(self._finish_coco())
            elif name == "bvh":
                step_seq = ResultSequence(fps=self.fps)
                for a in anims:
                    written.append(atomic_write_text(
                        self.out / f"{self.stem}_person{a.track_id}.bvh",
                        bvh_animation_text(a.pose_3d, a.frame_step(step_seq))))
        self._close_files()
        shutil.rmtree(self.partial, ignore_errors=True)
        return written

    def _lines(self, name: str) -> Iterable[bytes]:
        with open(self.partial / name, "rb") as fh:
            for line in fh:
                yield line.rstrip(b"\n")

    def _source_stored(self, path: Path) -> str | None:
        source = self.source
        if source and Path(source).exists():
            source = stored_image_path(source, path)
        return source

    def _finish_json(self, messages: list[str], anims: list[Any]) -> Path:
        path = self.out / f"{self.stem}.json"
        head = {"schema": SEQUENCE_SCHEMA, "version": SEQUENCE_VERSION,
                "source": self._source_stored(path), "fps": self.fps,
                "num_frames": self.frames_done, "smoothing": self.smoothing,
                "messages": messages, **(self._common or {})}
        with atomic_open(path, "wb") as fh:
            fh.write(json.dumps(head, allow_nan=False)[:-1].encode("utf-8"))
            fh.write(b',\n"frames": [\n')
            for i, line in enumerate(self._lines("frames.jsonl")):
                fh.write((b",\n" if i else b"") + line)
            fh.write(b'\n],\n"tracks": ')
            fh.write(json.dumps([track_to_dict(a) for a in anims],
                                allow_nan=False).encode("utf-8"))
            fh.write(b"}\n")
        return path

    def _finish_csv(self) -> Path:
        path = self.out / f"{self.stem}.csv"
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(SEQUENCE_COLUMNS)
        with atomic_open(path, "wb") as fh:
            fh.write(buf.getvalue().encode("utf-8"))
            with open(self.partial / "rows.csv", "rb") as src:
                shutil.copyfileobj(src, fh)
        return path

    def _finish_coco(self) -> Path:
        path = self.out / f"{self.stem}.coco.json"
        doc = coco_dict([], self.stage)
        with atomic_open(path, "wb") as fh:
            fh.write(b'{"info": ' + json.dumps(doc["info"]).encode("utf-8"))
            for key in ("images", "annotations"):
                fh.write(f',\n"{key}": [\n'.encode())
                for i, line in enumerate(self._lines(f"coco_{key}.jsonl")):
                    fh.write((b",\n" if i else b"") + line)
                fh.write(b"\n]")
            fh.write(b',\n"categories": ' + json.dumps(doc["categories"]).encode("utf-8"))
            fh.write(b"}\n")
        return path

    def _finish_npz(self, messages: list[str], anims: list[Any]) -> Path:
        """The NPZ from the chunks: each chunk read once, each key's padded rows gathered in
        a raw file of its own (``<partial>/raw/``), then each raw file copied into its
        ``.npy`` member after the header (a zip takes one member at a time)."""
        path = self.out / f"{self.stem}.npz"
        n = self.frames_done
        chunks = [self.partial / f"npz_{c:06d}.npz" for c in range(self._npz_chunks)]
        raw = self.partial / "raw"
        raw.mkdir(exist_ok=True)
        specs = {}
        for i, (k, info) in enumerate(self._npz_keys.items()):
            dtype = np.dtype(info["dtype"])
            lead = (self._p_max,) if k in _PERSON_KEYS else (self._p_max, self._t_max)
            specs[k] = (raw / f"{i}.bin", dtype, lead + tuple(info["tail"]),
                        _fill_for(np.empty(0, dtype=dtype)))
        nums, metas = [], []
        outs = {k: open(sp[0], "wb") for k, sp in specs.items()}  # noqa: SIM115
        try:
            for c in chunks:
                with np.load(c, allow_pickle=False) as d:
                    arrays = {name: d[name] for name in d.files}
                for j in range(int(arrays["count"])):
                    nums.append(len(arrays[f"{j}:has_fit"]))
                    metas.append(str(arrays[f"{j}:meta_json"]))
                    for k, (_, dtype, shape, fill) in specs.items():
                        block = np.full(shape, fill, dtype=dtype)
                        v = arrays.get(f"{j}:{k}")
                        if v is not None and v.size:
                            block[tuple(slice(0, x) for x in v.shape)] = v
                        outs[k].write(block.tobytes())
        finally:
            for fh in outs.values():
                fh.close()
        with atomic_open(path, "wb") as fh, \
                zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED,
                                allowZip64=True) as zf:

            def put(key: str, arr: np.ndarray) -> None:
                with zf.open(key + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)

            for k, (file, dtype, shape, _) in specs.items():
                header = {"descr": np.lib.format.dtype_to_descr(dtype),
                          "fortran_order": False, "shape": (n,) + shape}
                with zf.open(k + ".npy", "w", force_zip64=True) as f, open(file, "rb") as src:
                    np.lib.format.write_array_header_2_0(f, header)
                    shutil.copyfileobj(src, f, 1 << 20)
            with np.load(chunks[0], allow_pickle=False) as d0:
                for k in _SHARED_KEYS:
                    put(k, d0[f"0:{k}"])
            put("num_persons", np.array(nums, dtype=np.int64))
            put("frame_meta_json", np.array(metas, dtype=np.str_))
            values = {"index": self._index, "time": self._time}
            for s in FRAME_FIELDS:
                put(s.npz_key, np.array(values[s.name], dtype=s.np_dtype))
            for k, v in track_arrays(anims).items():
                put(k, v)
            put("sequence_json", np.array(json.dumps({
                "schema": SEQUENCE_SCHEMA, "version": SEQUENCE_VERSION,
                "source": self.source, "fps": self.fps, "smoothing": self.smoothing,
                "messages": messages}, allow_nan=False), dtype=np.str_))
        return path
