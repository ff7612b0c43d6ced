"""The engines of ``poseviewer estimate``: how :func:`~poseviewer.commands._pipeline.process`
is mapped over the photos. Nothing else differs between them: the same step writes the
same files, the same sink takes the records (commands/_pipeline.py); videos never reach an
engine. The only module that imports Ray (an import contract).

* ``plain``: one photo at a time in this process, read from the path as given, one
  unpadded network forward per photo (as ``Estimator.estimate`` and the viewer run).
* ``local``: photos decoded in worker processes (a torch ``DataLoader``) while the
  Estimator runs batches of ``--batch-size`` photos (``Estimator.estimate_many``: one
  network forward over their crops, padded to exactly the batch size).
* ``ray``: a Ray Data pipeline: the photos -> decode (CPU tasks) -> ``process`` (a pool of
  actors, each holding an Estimator, one per CPU or GPU) -> the records come back to this
  process in input order.

``local`` and ``ray`` give the same numbers with the same ``--batch-size`` whatever their
thread counts.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.commands._options import (
    DEFAULT_BATCH,
    ENGINES,
    EngineOptions,
    EstimatorSettings,
    load_estimator,
)
from poseviewer.commands._pipeline import (
    Engine,
    Photo,
    PhotoStep,
    Record,
    decode,
    has_pyarrow,
    process,
)
from poseviewer.imageio import LoadedImage

__all__ = ["add_engine_arguments", "engine_for", "has_pyarrow"]


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and its options."""
    g = parser.add_argument_group("engines (local: this machine; ray: a Ray cluster)")
    g.add_argument("--engine", choices=ENGINES, default="local",
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


def engine_for(options: EngineOptions, settings: EstimatorSettings) -> Engine:
    """The engine ``--engine`` names (``settings``: what a Ray actor loads)."""
    if options.name == "plain":
        return PlainEngine()
    if options.name == "ray":
        return RayEngine(options, settings)
    return LocalEngine(options)


# ---- plain -------------------------------------------------------------------------------------
class PlainEngine:
    """One photo at a time, decoded and estimated in this process."""

    name = "plain"
    absolute_paths = False

    def map(self, estimator: Any, photos: list[Photo], step: PhotoStep) -> Iterator[Record]:
        one = replace(step, batch_size=None)  # each photo's crops in one unpadded forward
        for photo in photos:
            yield from process(estimator, [(photo, decode(photo.path, estimator.max_pixels))],
                               one)


# ---- local -------------------------------------------------------------------------------------
class _DecodeSet:
    """A map-style dataset: item i -> (photo, decoded image or error)."""

    def __init__(self, photos: list[Photo], max_pixels: int) -> None:
        self.photos = photos
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, i: int) -> tuple[Photo, LoadedImage | str]:
        return self.photos[i], decode(self.photos[i].path, self.max_pixels)


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


class LocalEngine:
    """Batches of photos through one Estimator here; decoding in ``--workers`` processes."""

    name = "local"
    absolute_paths = True

    def __init__(self, options: EngineOptions) -> None:
        self.options = options

    def map(self, estimator: Any, photos: list[Photo], step: PhotoStep) -> Iterator[Record]:
        import torch
        from torch.utils.data import DataLoader

        o = self.options
        threads = torch.get_num_threads()
        if o.threads:
            torch.set_num_threads(int(o.threads))
        loader = DataLoader(_DecodeSet(photos, estimator.max_pixels), batch_size=o.batch_size,
                            num_workers=max(o.workers, 0), collate_fn=_as_list,
                            prefetch_factor=2 if o.workers > 0 else None)
        try:
            for chunk in loader:
                yield from process(estimator, chunk, step)
        finally:  # the process's setting again (the command may run inside a larger program)
            torch.set_num_threads(threads)


# ---- ray ----------------------------------------------------------------------------------------
def pack(obj: Any) -> bytes:
    """A dataclass (e.g. a ``LoadedImage``) as bytes, field by field from its own field list:
    array fields raw, the others as JSON. :func:`unpack` reverses it."""
    head: dict[str, Any] = {}
    blobs = []
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray):
            v = np.ascontiguousarray(v)
            head[f.name] = {"array": [v.dtype.str, list(v.shape)]}
            blobs.append(v.tobytes())
        else:
            head[f.name] = {"value": v}
    text = json.dumps(head).encode()
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def unpack(cls: type, data: bytes) -> Any:
    """The ``cls`` instance :func:`pack` made ``data`` of (tuples come back as tuples)."""
    n = int.from_bytes(data[:8], "little")
    head = json.loads(data[8:8 + n])
    pos, kw = 8 + n, {}
    for f in fields(cls):
        spec = head[f.name]
        if "array" in spec:
            dtype, shape = np.dtype(spec["array"][0]), tuple(spec["array"][1])
            count = math.prod(shape)
            kw[f.name] = np.frombuffer(data, dtype, count, pos).reshape(shape).copy()
            pos += count * dtype.itemsize
        else:
            v = spec["value"]
            kw[f.name] = tuple(v) if isinstance(f.default, tuple) else v
    return cls(**kw)


def _decode_row(row: dict[str, Any], max_pixels: int) -> dict[str, Any]:
    """Ray: decode one photo into two columns: its error ('' when none), the image packed."""
    img = decode(row["path"], max_pixels)
    failed = isinstance(img, str)
    return {**row, "error": img if failed else "", "image": b"" if failed else pack(img)}


class EstimateActor:
    """Ray: one Estimator; batches of decoded rows in, one JSON record per row out."""

    def __init__(self, settings: EstimatorSettings, threads: int, step: PhotoStep) -> None:
        import torch

        torch.set_num_threads(threads)
        self.estimator = load_estimator(settings)
        self.step = step

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items: list[tuple[Photo, LoadedImage | str]] = []
        for k in range(len(batch["index"])):
            photo = Photo(**{f.name: _plain(batch[f.name][k]) for f in fields(Photo)})
            error = str(batch["error"][k])
            items.append((photo, error or unpack(LoadedImage, bytes(batch["image"][k]))))
        records = process(self.estimator, items, self.step)
        return {"record": np.array([json.dumps(asdict(r)) for r in records], dtype=object)}


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value (a Ray batch's cell)."""
    return v.item() if isinstance(v, np.generic) else v


def _abs(p: str | None) -> str | None:
    return None if p is None else str(Path(p).resolve())


class RayEngine:
    """A Ray Data pipeline on this machine or ``--ray-address``."""

    name = "ray"
    absolute_paths = True

    def __init__(self, options: EngineOptions, settings: EstimatorSettings) -> None:
        self.options = options
        self.settings = settings

    def map(self, estimator: Any, photos: list[Photo], step: PhotoStep) -> Iterator[Record]:
        try:
            import ray
            import ray.data  # noqa: F401 - the data library is part of the extra
        except ImportError as exc:
            raise RuntimeError("--engine ray needs Ray: pip install 'poseviewer[cluster]' "
                               f"({exc})") from None
        o = self.options
        started = not ray.is_initialized()
        if started:
            ray.init(address=o.ray_address, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False)
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.execution_options.preserve_order = True  # records come back in input order
            ctx.enable_progress_bars = False
            threads = int(o.threads or 1)
            if o.num_gpus > 0:
                actors, res = int(o.num_gpus), {"num_gpus": 1, "num_cpus": threads}
            else:
                cpus = int(ray.cluster_resources().get("CPU", 1))
                actors = int(o.actors or max((cpus - 1) // threads, 1))
                res = {"num_cpus": threads}
            s = self.settings  # the actors may run elsewhere: absolute paths
            settings = replace(s, weights=_abs(s.weights), pose_model=_abs(s.pose_model),
                               person_weights=_abs(s.person_weights))
            rows = [asdict(p) for p in photos]
            b = int(step.batch_size)
            ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows),
                                                                           -(-len(rows) // b))))
            # decode: CPU tasks (half a CPU each: light, and a different resource request
            # keeps Ray from fusing them into the actors)
            ds = ds.map(_decode_row, fn_kwargs={"max_pixels": estimator.max_pixels},
                        num_cpus=0.5)
            ds = ds.map_batches(EstimateActor, fn_constructor_kwargs={
                "settings": settings, "threads": threads, "step": step}, batch_size=b,
                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), **res)
            for row in ds.iter_rows():
                yield Record(**json.loads(row["record"]))
        finally:
            if started:
                ray.shutdown()
