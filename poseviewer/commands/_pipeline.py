"""The one pipeline of ``poseviewer estimate``: inputs -> (photos: ``process`` mapped by an
engine | videos: ``process_video``, one at a time) -> records -> one :class:`Sink` (the
report, the COCO file, the Parquet table).

* A photo: :func:`decode` then :func:`process` (estimate a batch, write each photo's files,
  one :class:`Record` per photo). The engines (``plain``, ``local``, ``ray``:
  commands/_engines.py) differ only in how they map ``process`` over the photos.
* A video: :func:`process_video` in this process, whatever the
  engine (its frames stream through ``poseviewer.video`` and ``export.stream``).

Every engine writes the same files; the report lists the inputs in their order.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from poseviewer.commands._batch import (
    CocoCollector,
    Report,
    UniqueStems,
    finish_batch,
    implausible_count,
)
from poseviewer.commands._options import EstimateOptions, OutputOptions
from poseviewer.commands._video import estimate_video_file
from poseviewer.export import EXPORTERS, coco_dict, export_result
from poseviewer.export.table import ParquetTable, person_rows
from poseviewer.imageio import LoadedImage, load_image
from poseviewer.video.source import is_video_path

#: The Parquet table of every photo's people (in --out).
TABLE_NAME = "poses.parquet"
#: The message of an input ``--resume`` skipped.
SKIPPED = "skipped (--resume): its files exist"


@dataclass(frozen=True)
class Photo:
    """One photo to analyse: its place among the inputs, its name on the command line, its
    output stem, the path it is read from."""

    index: int
    input: str
    stem: str
    path: str


@dataclass(frozen=True)
class PhotoStep:
    """What :func:`process` writes, and the network's batch (None: one unpadded forward of
    the batch's crops, as ``Estimator.estimate`` runs)."""

    output: OutputOptions
    batch_size: int | None


@dataclass
class Record:
    """One input's outcome, as the sink takes it (JSON-safe values only)."""

    index: int
    input: str
    stem: str
    error: str | None = None
    """'Type: message' when the input failed."""
    outputs: list[str] = field(default_factory=list)
    persons: int = 0
    implausible: int = 0
    messages: list[str] = field(default_factory=list)
    skipped: bool = False
    coco: dict[str, Any] | None = None
    """A photo's COCO document (``coco_dict``) when the COCO file is written."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    """A photo's rows of the Parquet table (``person_rows``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More keys for its report entry (a video's frame and track counts)."""


# ---- photos ----------------------------------------------------------------------------------
def decode(path: str, max_pixels: int) -> LoadedImage | str:
    """Load one image; a failure comes back as its message 'Type: message'."""
    try:
        return load_image(path, max_pixels)
    except Exception as exc:  # noqa: BLE001 - reported per file
        return f"{type(exc).__name__}: {exc}"


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def process(estimator: Any, batch: list[tuple[Photo, LoadedImage | str]],
            step: PhotoStep) -> list[Record]:
    """Estimate a batch of decoded photos (or their decoding errors), write each photo's
    files and return one record per photo, in order."""
    ok = [(photo, img) for photo, img in batch if isinstance(img, LoadedImage)]
    results = estimator.estimate_many([img for _, img in ok], batch_size=step.batch_size,
                                      return_exceptions=True) if ok else []
    by_index = {photo.index: r for (photo, _), r in zip(ok, results, strict=True)}
    out = step.output
    records = []
    for photo, img in batch:
        rec = Record(photo.index, photo.input, photo.stem)
        result = img if isinstance(img, str) else by_index[photo.index]
        if isinstance(result, str):
            rec.error = result
        elif isinstance(result, Exception):
            rec.error = _message(result)
        else:
            try:
                written = export_result(result, out.out, photo.stem, out.per_image,
                                        save_maps=out.save_maps, frame=out.frame)
                rec.outputs = [str(p) for p in written]
                rec.persons = len(result.persons)
                rec.messages = list(result.messages)
                rec.implausible = implausible_count(result)
                rec.coco = coco_dict(result) if out.coco else None
                rec.rows = person_rows(result, photo.input, photo.stem, out.frame)
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                rec = Record(photo.index, photo.input, photo.stem, _message(exc))
        records.append(rec)
    return records


def outputs_exist(out: Path, stem: str, per_image: tuple[str, ...]) -> bool:
    """True when the photo's per-image files are in ``out`` (``--resume``): every
    one-file format's file; for per-person formats alone, at least one person's file."""
    fixed = [EXPORTERS[f].suffix for f in per_image if not EXPORTERS[f].per_person]
    if fixed:
        return all((out / f"{stem}{s}").is_file() for s in fixed)
    return any(any(out.glob(f"{stem}_person*{EXPORTERS[f].suffix}")) for f in per_image)


def skipped_record(photo: Photo, output: OutputOptions) -> Record:
    """``--resume``: the record of a photo whose files exist; its table rows and COCO
    entry are read back from its JSON file when it has one."""
    from poseviewer.export import read_json

    out, stem = Path(output.out), photo.stem
    outputs = sorted(str(p) for f in output.per_image for p in
                     (out.glob(f"{stem}_person*{EXPORTERS[f].suffix}") if EXPORTERS[f].per_person
                      else [out / f"{stem}{EXPORTERS[f].suffix}"]))
    rec = Record(photo.index, photo.input, stem, outputs=outputs, skipped=True)
    msg = SKIPPED
    js = out / f"{stem}.json"
    if "json" in output.per_image and js.is_file():
        try:
            result = read_json(js)
            rec.persons = len(result.persons)
            rec.coco = coco_dict(result) if output.coco else None
            rec.rows = person_rows(result, photo.input, stem, output.frame)
        except Exception as exc:  # noqa: BLE001 - the skip stands; say why rows are missing
            msg += f"; its JSON could not be read back ({_message(exc)})"
    else:
        msg += "; no JSON to read its table rows back from"
    rec.messages = [msg]
    return rec


# ---- videos --------------------------------------------------------------------------------
def process_video(estimator: Any, index: int, path: Path, stem: str, opts: EstimateOptions,
                  tqdm: Any) -> Record:
    """The video step: estimate one video in this process and write its exports as the
    frames come; returns its record (a failure as its message). An interrupted run
    (``KeyboardInterrupt``, raised on) keeps its output in ``<stem>.partial`` (said on
    stderr) and ``--resume`` continues it."""
    try:
        res = estimate_video_file(estimator, path, stem, opts, tqdm)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        return Record(index, str(path), stem, _message(exc))
    if res is None:
        return Record(index, str(path), stem, messages=[SKIPPED], skipped=True)
    return Record(index, str(path), stem, outputs=[str(p) for p in res.files],
                  persons=res.max_people, messages=list(res.messages) + [f"{res.frames} frames"],
                  extra={"frames": res.frames, "tracks": res.tracks,
                         "resumed_at_frame": res.resumed_at,
                         "person_frames": res.person_frames,
                         "implausible_person_frames": res.implausible})


# ---- the engines' face -------------------------------------------------------------------
class Engine(Protocol):
    """How ``process`` is mapped over the photos (commands/_engines.py)."""

    name: str
    absolute_paths: bool
    """Photos are read from their absolute paths (else as given on the command line)."""

    def map(self, estimator: Any, photos: list[Photo], step: PhotoStep
            ) -> Iterator[Record]:
        """The photos' records, in input order, as they come."""
        ...


# ---- the sinks ---------------------------------------------------------------------------------
def has_pyarrow() -> bool:
    """pyarrow (for the Parquet table) is installed."""
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


class Sink:
    """Takes every input's record: the report (in input order), the COCO file and the
    Parquet table (photos)."""

    def __init__(self, out: Path, frame: str, coco: bool, table: bool) -> None:
        self.out = Path(out)
        self.report = Report("estimate", self.out)
        self.coco = CocoCollector()
        self.want_coco = coco
        self.table: ParquetTable | None = None
        if table and has_pyarrow():
            self.table = ParquetTable(self.out / TABLE_NAME, frame)
        elif table:
            print(f"poseviewer estimate: {TABLE_NAME} not written: it needs pyarrow "
                  "(pip install 'poseviewer[cluster]')", file=sys.stderr)
        self.skipped = 0
        self.photos_ok = 0
        self.seen: set[int] = set()

    def add(self, rec: Record, photo: bool = True) -> None:
        """One input's record (``photo``: its rows and COCO entry count, and a skip is
        counted in the summary line)."""
        self.seen.add(rec.index)
        if rec.error is not None:
            self.report.failure(rec.input, rec.error, order=rec.index)
            return
        self.skipped += rec.skipped and photo
        self.report.success(rec.input, [Path(p) for p in rec.outputs], rec.persons,
                            rec.messages, rec.implausible, extra=rec.extra or None,
                            order=rec.index)
        if not photo:
            return
        self.photos_ok += 1
        if self.want_coco and rec.coco is not None:
            self.coco.add_dict(rec.coco)
        if self.table is not None:
            self.table.add(rec.rows)

    def abort(self) -> None:
        """Drop the table being written."""
        if self.table is not None:
            self.table.abort()

    def finish(self, interrupted: bool) -> int:
        """Close the table, write the COCO file and ``report.json``; the exit code. No
        photo succeeded: no table at all, not an empty one."""
        table = None
        try:
            if self.table is not None and not self.photos_ok:
                self.abort()
            elif self.table is not None:
                table = self.table.close()
        except Exception as exc:  # noqa: BLE001 - reported as a failure, the rest stands
            self.abort()
            self.report.failure(self.out / TABLE_NAME, exc)
        if self.skipped:
            print(f"estimate: {self.skipped} input(s) skipped (--resume: their files exist)")
        return finish_batch(self.report, self.coco, self.out, interrupted,
                            extra=[table] if table else [])


# ---- the run -----------------------------------------------------------------------------------
def run_pipeline(opts: EstimateOptions, estimator: Any, engine: Engine,
                 files: Iterable[tuple[Path, str]]) -> int:
    """Run ``poseviewer estimate`` on ``files`` ((path, output stem), the models loaded, the
    output folder made): the photos through ``engine``, then the videos one by one; returns
    the exit code."""
    from tqdm import tqdm

    out = Path(opts.output.out).resolve()
    output = replace(opts.output, out=out)
    stems = UniqueStems()
    named = [(i, Path(p), stems(stem)) for i, (p, stem) in enumerate(files)]
    videos = [(i, p, stem) for i, p, stem in named if is_video_path(p)]
    photos = [Photo(i, str(p), stem, str(p.resolve()) if engine.absolute_paths else str(p))
              for i, p, stem in named if not is_video_path(p)]
    done = [p for p in photos if opts.resume and outputs_exist(out, p.stem, output.per_image)]
    skip = {p.index for p in done}
    todo = [p for p in photos if p.index not in skip]
    sink = Sink(out, output.frame, output.coco, table=bool(photos))
    step = PhotoStep(output, opts.engine.batch_size)
    bar = tqdm(total=len(todo), unit="image", disable=None if opts.progress else True,
               dynamic_ncols=True)
    interrupted = False
    try:
        for photo in done:  # skipped photos first, in input order
            sink.add(skipped_record(photo, output))
        if todo:
            try:
                for rec in engine.map(estimator, todo, step):
                    sink.add(rec)
                    bar.update(1)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. Ray could not start, a node was lost
                msg = f"{engine.name} engine failed: {_message(exc)}"
                print(f"poseviewer estimate: {msg}", file=sys.stderr)
                if not any(p.index in sink.seen for p in todo):  # nothing came back: exit 2
                    bar.close()
                    sink.abort()
                    return 2
                for p in todo:  # what came back stands; the rest is reported as failed
                    if p.index not in sink.seen:
                        sink.add(Record(p.index, p.input, "", msg))
        bar.close()
        for i, path, stem in videos:
            sink.add(process_video(estimator, i, path, stem, opts, tqdm), photo=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return sink.finish(interrupted)
