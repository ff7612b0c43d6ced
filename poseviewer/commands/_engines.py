"""The batch engines of ``poseviewer estimate``.

* ``local``: images decoded in worker processes (a torch ``DataLoader``) while the
  Estimator runs batches of images (``Estimator.estimate_many``: one network forward over
  the crops of ``--batch-size`` images).
* ``ray``: a Ray Data pipeline: the inputs -> decode (CPU tasks) -> estimate (a pool of
  actors, each holding an Estimator, one per CPU or GPU) -> the records come back to this
  process in input order.
* ``plain`` (in ``estimate.py``): one image at a time, as the viewer does.

Both engines share :func:`process` (estimate a batch, write the per-image files, make a
JSON-safe record per image) and :class:`Sink` (report, COCO file, Parquet table), so they
write the same files; with the same ``--batch-size`` and ``--threads`` the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.commands._batch import (
    CocoCollector,
    Report,
    UniqueStems,
    estimator_settings,
    finish_batch,
    implausible_count,
    load_estimator,
)
from poseviewer.export import EXPORTERS, coco_dict, export_result
from poseviewer.export.table import ParquetTable, person_rows
from poseviewer.imageio import LoadedImage, load_image

#: The Parquet table of every person's joints (in --out).
TABLE_NAME = "poses.parquet"
DEFAULT_BATCH = 8


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and its options."""
    g = parser.add_argument_group("engines (local: this machine; ray: a Ray cluster)")
    g.add_argument("--engine", choices=("local", "ray", "plain"), default="local",
                   help="local (default): parallel decoding, batches of images through the "
                   "network; ray: a Ray Data pipeline (needs poseviewer[cluster]); plain: one "
                   "image at a time")
    g.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="B",
                   help=f"images per batch and crops per network forward (default "
                   f"{DEFAULT_BATCH}; results depend on B at float32 rounding only)")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local: decoding processes (default 1; 0 decodes in this process)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads per Estimator (local default: torch's; ray: 1 per "
                   "actor; each ray actor reserves this many CPUs)")
    g.add_argument("--resume", action="store_true",
                   help="skip inputs whose per-image files already exist in --out; a "
                   "video's interrupted run (its <name>.partial folder) continues")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="ray: the cluster to join (e.g. ray://head:10001 or auto); default: "
                   "start Ray on this machine")
    g.add_argument("--num-gpus", type=int, default=0, metavar="G",
                   help="ray: G GPU actors (one GPU each) instead of CPU actors")
    g.add_argument("--actors", type=int, default=None, metavar="N",
                   help="ray, CPU actors: how many (default: the cluster's CPUs minus one, "
                   "divided by --threads)")


@dataclass(frozen=True)
class BatchOptions:
    """What to write for each image (plain values: travels to Ray actors)."""

    out: str
    per_image: tuple[str, ...]
    coco: bool
    save_maps: bool
    frame: str
    batch_size: int


# ---- the shared steps --------------------------------------------------------------------------
def decode(path: str, max_pixels: int) -> LoadedImage | str:
    """Load one image; a failure comes back as its message 'Type: message'."""
    try:
        return load_image(path, max_pixels)
    except Exception as exc:  # noqa: BLE001 - reported per file
        return f"{type(exc).__name__}: {exc}"


def outputs_exist(out: Path, stem: str, per_image: tuple[str, ...]) -> bool:
    """True when the image's per-image files are in ``out`` (``--resume``): every
    one-file format's file; for per-person formats alone, at least one person's file."""
    fixed = [EXPORTERS[f].suffix for f in per_image if not EXPORTERS[f].per_person]
    if fixed:
        return all((out / f"{stem}{s}").is_file() for s in fixed)
    return any(any(out.glob(f"{stem}_person*{EXPORTERS[f].suffix}")) for f in per_image)


def _record(index: int, source: str, stem: str, error: str | None = None,
            **kw: Any) -> dict[str, Any]:
    rec = {"index": index, "input": source, "stem": stem, "error": error, "outputs": [],
           "persons": 0, "messages": [], "coco": None, "rows": [], "skipped": False}
    rec.update(kw)
    return rec


def process(estimator: Any, items: list[tuple[int, str, str, LoadedImage | str]],
            opts: BatchOptions) -> list[dict[str, Any]]:
    """Estimate a batch of (index, input, stem, decoded image or error), write each
    image's files and return one JSON-safe record per item, in order."""
    ok = [it for it in items if isinstance(it[3], LoadedImage)]
    results = estimator.estimate_many([it[3] for it in ok], batch_size=opts.batch_size,
                                      return_exceptions=True)
    by_index = {it[0]: r for it, r in zip(ok, results, strict=True)}
    records = []
    for index, source, stem, img in items:
        if isinstance(img, str):
            records.append(_record(index, source, stem, img))
            continue
        result = by_index[index]
        if isinstance(result, Exception):
            records.append(_record(index, source, stem, f"{type(result).__name__}: {result}"))
            continue
        try:
            written = export_result(result, opts.out, stem, opts.per_image,
                                    save_maps=opts.save_maps, frame=opts.frame)
            records.append(_record(
                index, source, stem, outputs=[str(p) for p in written],
                persons=len(result.persons), messages=list(result.messages),
                implausible=implausible_count(result),
                coco=coco_dict(result) if opts.coco else None,
                rows=person_rows(result, source, stem, opts.frame)))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            records.append(_record(index, source, stem, f"{type(exc).__name__}: {exc}"))
    return records


def skipped_record(index: int, source: str, stem: str, opts: BatchOptions) -> dict[str, Any]:
    """``--resume``: the record of an input whose files exist; its table rows and COCO
    entry are read back from its JSON file when it has one."""
    from poseviewer.export import read_json

    out = Path(opts.out)
    outputs = sorted(str(p) for f in opts.per_image for p in
                     (out.glob(f"{stem}_person*{EXPORTERS[f].suffix}") if EXPORTERS[f].per_person
                      else [out / f"{stem}{EXPORTERS[f].suffix}"]))
    msg = "skipped (--resume): its files exist"
    js = out / f"{stem}.json"
    if "json" in opts.per_image and js.is_file():
        try:
            result = read_json(js)
            return _record(index, source, stem, outputs=outputs, persons=len(result.persons),
                           messages=[msg], skipped=True,
                           coco=coco_dict(result) if opts.coco else None,
                           rows=person_rows(result, source, stem, opts.frame))
        except Exception as exc:  # noqa: BLE001 - the skip stands; say why rows are missing
            msg += f"; its JSON could not be read back ({type(exc).__name__}: {exc})"
    else:
        msg += "; no JSON to read its table rows back from"
    return _record(index, source, stem, outputs=outputs, messages=[msg], skipped=True)


def has_pyarrow() -> bool:
    """pyarrow (for the Parquet table) is installed."""
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


class Sink:
    """Takes the records in input order: the report, the COCO file, the Parquet table."""

    def __init__(self, out: Path, frame: str, coco: bool) -> None:
        self.out = Path(out)
        self.report = Report("estimate", self.out)
        self.coco = CocoCollector()
        self.want_coco = coco
        self.table: ParquetTable | None = None
        if has_pyarrow():
            self.table = ParquetTable(self.out / TABLE_NAME, frame)
        else:
            print(f"poseviewer estimate: {TABLE_NAME} not written: it needs pyarrow "
                  "(pip install 'poseviewer[cluster]')", file=sys.stderr)
        self.skipped = 0
        self.seen: set[int] = set()

    def add(self, rec: dict[str, Any]) -> None:
        """One image's record."""
        self.seen.add(rec["index"])
        if rec["error"] is not None:
            self.report.failure(rec["input"], rec["error"])
            return
        self.skipped += bool(rec.get("skipped"))
        self.report.success(rec["input"], [Path(p) for p in rec["outputs"]], rec["persons"],
                            rec["messages"], rec.get("implausible", 0))
        if self.want_coco and rec["coco"] is not None:
            self.coco.add_dict(rec["coco"])
        if self.table is not None:
            self.table.add(rec["rows"])

    def abort(self) -> None:
        """Drop the table being written."""
        if self.table is not None:
            self.table.abort()

    def finish(self, interrupted: bool) -> int:
        """Close the table, write the COCO file and ``report.json``; the exit code. No
        input succeeded (every one failed): no table at all, not an empty one."""
        table = None
        try:
            if self.table is not None and not self.report.ok:
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


# ---- local ------------------------------------------------------------------------------------
class _DecodeSet:
    """A map-style dataset: item i -> (index, input, stem, decoded image or error)."""

    def __init__(self, items: list[tuple[int, str, str, str]], max_pixels: int) -> None:
        self.items = items
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, str, str, LoadedImage | str]:
        index, source, stem, path = self.items[i]
        return index, source, stem, decode(path, self.max_pixels)


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


def _run_local(estimator: Any, todo: list[tuple[int, str, str, str]], opts: BatchOptions,
               args: argparse.Namespace, sink: Sink, bar: Any) -> None:
    import torch
    from torch.utils.data import DataLoader

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(int(args.threads))
    loader = DataLoader(_DecodeSet(todo, estimator.max_pixels), batch_size=opts.batch_size,
                        num_workers=max(int(args.workers), 0), collate_fn=_as_list,
                        prefetch_factor=2 if args.workers > 0 else None)
    try:
        for chunk in loader:
            for rec in process(estimator, chunk, opts):
                sink.add(rec)
                bar.update(1)
    finally:  # the process's setting again (the command may run inside a larger program)
        torch.set_num_threads(threads)


# ---- ray ----------------------------------------------------------------------------------------
def _decode_row(row: dict[str, Any], max_pixels: int) -> dict[str, Any]:
    """Ray: decode one image into plain columns (raw RGB bytes and its shape)."""
    img = decode(row["path"], max_pixels)
    out = {"index": row["index"], "input": row["input"], "stem": row["stem"]}
    if isinstance(img, str):
        return {**out, "error": img, "rgb": b"", "h": 0, "w": 0, "scale": 1.0, "ow": 0,
                "oh": 0, "path": "", "messages": "[]"}
    h, w = img.rgb.shape[:2]
    return {**out, "error": "", "rgb": np.ascontiguousarray(img.rgb).tobytes(), "h": h,
            "w": w, "scale": float(img.scale), "ow": int(img.original_size[0]),
            "oh": int(img.original_size[1]), "path": img.path or "",
            "messages": json.dumps(img.messages)}


class EstimateActor:
    """Ray: one Estimator; batches of decoded rows in, one JSON record per row out."""

    def __init__(self, settings: dict[str, Any], opts: dict[str, Any]) -> None:
        import torch

        if settings.get("threads"):
            torch.set_num_threads(int(settings["threads"]))
        self.estimator = load_estimator(settings)
        self.opts = BatchOptions(**{**opts, "per_image": tuple(opts["per_image"])})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items: list[tuple[int, str, str, LoadedImage | str]] = []
        for k in range(len(batch["index"])):
            key = (int(batch["index"][k]), str(batch["input"][k]), str(batch["stem"][k]))
            if batch["error"][k]:
                items.append((*key, str(batch["error"][k])))
                continue
            h, w = int(batch["h"][k]), int(batch["w"][k])
            rgb = np.frombuffer(batch["rgb"][k], dtype=np.uint8).reshape(h, w, 3).copy()
            items.append((*key, LoadedImage(
                rgb, path=str(batch["path"][k]) or None,
                messages=json.loads(str(batch["messages"][k])),
                scale=float(batch["scale"][k]),
                original_size=(int(batch["ow"][k]), int(batch["oh"][k])))))
        recs = process(self.estimator, items, self.opts)
        return {"record": np.array([json.dumps(r) for r in recs], dtype=object)}


def _run_ray(todo: list[tuple[int, str, str, str]], opts: BatchOptions,
             args: argparse.Namespace, sink: Sink, bar: Any, max_pixels: int) -> None:
    try:
        import ray
        import ray.data  # noqa: F401 - the data library is part of the extra
    except ImportError as exc:
        raise RuntimeError("--engine ray needs Ray: pip install 'poseviewer[cluster]' "
                           f"({exc})") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.ray_address, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # records come back in input order
        ctx.enable_progress_bars = False
        threads = int(args.threads or 1)
        if args.num_gpus > 0:
            actors, res = int(args.num_gpus), {"num_gpus": 1, "num_cpus": threads}
        else:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            actors = int(args.actors or max((cpus - 1) // threads, 1))
            res = {"num_cpus": threads}
        settings = {**estimator_settings(args), "weights": _abs(args.weights),
                    "pose_model": _abs(args.pose_model),
                    "person_weights": _abs(args.person_weights), "threads": threads}
        rows = [{"index": i, "input": src, "stem": stem, "path": path}
                for i, src, stem, path in todo]
        b = opts.batch_size
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows),
                                                                       -(-len(rows) // b))))
        # decode: CPU tasks (half a CPU each: light, and a different resource request keeps
        # Ray from fusing them into the actors)
        ds = ds.map(_decode_row, fn_kwargs={"max_pixels": max_pixels}, num_cpus=0.5)
        ds = ds.map_batches(EstimateActor, fn_constructor_kwargs={
            "settings": settings, "opts": asdict(opts)}, batch_size=b, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors), **res)
        for row in ds.iter_rows():
            sink.add(json.loads(row["record"]))
            bar.update(1)
    finally:
        if started:
            ray.shutdown()


def _abs(p: Any) -> str | None:
    return None if p is None else str(Path(p).resolve())


# ---- the command ---------------------------------------------------------------------
def run_engine(args: argparse.Namespace, estimator: Any, files: list[tuple[Path, str]],
               formats: tuple[str, ...]) -> int:
    """Run ``poseviewer estimate`` with ``--engine local`` or ``ray`` (the models loaded,
    the output folder made); returns the exit code."""
    from tqdm import tqdm

    if args.batch_size < 1:
        print("poseviewer estimate: --batch-size must be at least 1", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    opts = BatchOptions(out=str(out), per_image=tuple(f for f in formats
                                                      if not EXPORTERS[f].collect),
                        coco="coco" in formats, save_maps=bool(args.save_maps),
                        frame=args.frame, batch_size=int(args.batch_size))
    stems = UniqueStems()
    named = [(i, str(path), stems(stem), str(Path(path).resolve()))
             for i, (path, stem) in enumerate(files)]
    todo = [n for n in named if not (args.resume and outputs_exist(out, n[2], opts.per_image))]
    bar = tqdm(total=len(todo), unit="image", disable=True if args.no_progress else None,
               dynamic_ncols=True)
    sink = Sink(out, args.frame, opts.coco)
    interrupted = False
    done = {n[0] for n in named} - {t[0] for t in todo}
    try:
        for i, src, stem, _ in named:  # skipped inputs first, in input order
            if i in done:
                sink.add(skipped_record(i, src, stem, opts))
        if todo and args.engine == "ray":
            _run_ray(todo, opts, args, sink, bar, estimator.max_pixels)
        elif todo:
            _run_local(estimator, todo, opts, args, sink, bar)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:  # noqa: BLE001 - e.g. Ray could not start, a node was lost
        msg = f"{args.engine} engine failed: {type(exc).__name__}: {exc}"
        print(f"poseviewer estimate: {msg}", file=sys.stderr)
        if not sink.seen - done:  # nothing came back (e.g. Ray is missing): exit 2
            bar.close()
            sink.abort()
            return 2
        for i, src, _, _ in todo:  # what came back stands; the rest is reported as failed
            if i not in sink.seen:
                sink.add(_record(i, src, "", msg))
    finally:
        bar.close()
    return sink.finish(interrupted)
