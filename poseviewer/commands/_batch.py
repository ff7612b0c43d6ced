"""Plumbing of the batch commands ``estimate`` and ``lift``: the output options, the output
folder check, unique output names, one COCO file, the report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from poseviewer.atomic import AtomicWriteError, atomic_write_text
from poseviewer.export import DEFAULT_FRAME, coco_dict, formats_help
from poseviewer.result import FRAMES_3D, EstimateResult


class OutputFolderError(Exception):
    """The output folder cannot be created or written; the message says why."""


def check_out_dir(out: Path) -> None:
    """Fail early (``OutputFolderError``) when ``out`` cannot hold our files: it is not a
    folder, or it (or, when missing, the nearest existing folder above it) is not writable.
    Creates nothing: the folder is made only once the models have loaded."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output folder {out} exists and is not a folder")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputFolderError(f"cannot create the output folder {out}: {probe} is not a "
                                "folder")
    try:  # a real write: os.access misses read-only mounts and ACLs
        fd, name = tempfile.mkstemp(prefix=".poseviewer-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        what = "output folder" if probe == out else f"folder {probe} (to create {out} in)"
        raise OutputFolderError(f"cannot write to the {what}: "
                                f"{exc.strerror or exc}") from None


def make_out_dir(out: Path) -> None:
    """Create the output folder (after :func:`check_out_dir` and the model loading)."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create the output folder {out}: "
                                f"{exc.strerror or exc}") from None


class UniqueStems:
    """Output file stems, made unique by a numeric suffix."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, stem: str) -> str:
        stem = stem.replace("/", "__").replace("\\", "__") or "result"
        name, i = stem, 1
        while name.lower() in self._seen:
            i += 1
            name = f"{stem}_{i}"
        self._seen.add(name.lower())
        return name


def implausible_count(result: EstimateResult) -> int:
    """People of ``result`` whose final lifting was judged not believable
    (``PersonResult.implausible``)."""
    return sum(p.implausible for p in result.persons)


class CocoCollector:
    """Gathers the COCO keypoints of many results into one document."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None

    def add(self, result: EstimateResult) -> None:
        """Append the result's image and annotations, renumbering their ids."""
        self.add_dict(coco_dict(result))

    def add_dict(self, d: dict[str, Any]) -> None:
        """Append one image's COCO document (``coco_dict``), renumbering its ids."""
        if self.doc is None:
            self.doc = d
            return
        image_id = len(self.doc["images"]) + 1
        for im in d["images"]:
            im["id"] = image_id
        for ann in d["annotations"]:
            ann["id"] = len(self.doc["annotations"]) + 1
            ann["image_id"] = image_id
            self.doc["annotations"].append(ann)
        self.doc["images"] += d["images"]

    def write(self, path: Path) -> Path | None:
        """Write the document atomically; returns the path, or None when nothing was added."""
        if self.doc is None:
            return None
        return atomic_write_text(path, json.dumps(self.doc, indent=1, allow_nan=False) + "\n")


class Report:
    """Per-file outcomes: printed as they happen and written to ``report.json``."""

    def __init__(self, command: str, out_dir: Path) -> None:
        self.command = command
        self.out_dir = out_dir
        self.ok: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def success(self, source: str, outputs: list[Path], persons: int,
                messages: list[str], implausible: int = 0) -> None:
        """Record a file that gave ``outputs`` (``persons`` people, ``implausible`` of them
        lifted to a pose that is not believable, the result's messages)."""
        self.ok.append({"input": source, "persons": persons, "implausible": implausible,
                        "outputs": [str(p) for p in outputs], "messages": messages})

    def failure(self, source: str, exc: BaseException | str, write: Any = None) -> None:
        """Record and print a failed file (``exc``: the exception, or its message already
        formatted as 'Type: message'; ``write``: the print function, default stderr)."""
        msg = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.failed.append({"input": source, "error": msg})
        (write or (lambda s: print(s, file=sys.stderr)))(f"FAILED {source}: {msg}")

    def finish(self, extra_outputs: list[Path] | None = None,
               interrupted: bool = False) -> Path | None:
        """Write ``report.json``, print the summary and the failures; returns the path (None
        when it could not be written: the reason is printed, no traceback)."""
        n = len(self.ok) + len(self.failed)
        doc = {
            "command": self.command,
            "inputs": n,
            "succeeded": len(self.ok),
            "failed": len(self.failed),
            "interrupted": interrupted,
            "seconds": round(time.perf_counter() - self.t0, 3),
            "failures": self.failed,
            "people": sum(r["persons"] for r in self.ok),
            "implausible": sum(r.get("implausible", 0) for r in self.ok),
            "results": self.ok,
            "other_outputs": [str(p) for p in extra_outputs or []],
        }
        try:
            path = atomic_write_text(self.out_dir / "report.json",
                                     json.dumps(doc, indent=1) + "\n")
        except AtomicWriteError as exc:  # e.g. the folder became unwritable meanwhile
            print(f"poseviewer {self.command}: {exc}", file=sys.stderr)
            path = None
        people = sum(r["persons"] for r in self.ok)
        odd = sum(r.get("implausible", 0) for r in self.ok)
        print(f"{self.command}: {len(self.ok)} of {n} succeeded, {len(self.failed)} failed"
              f"{' (interrupted)' if interrupted else ''}; {people} people, {odd} of them "
              f"with an implausible 3D pose; report: {path}")
        for f in self.failed:
            print(f"  FAILED {f['input']}: {f['error']}", file=sys.stderr)
        return path


def finish_batch(report: Report, coco: CocoCollector, out_dir: Path, interrupted: bool,
                 extra: list[Path] | None = None) -> int:
    """End a batch command: write the COCO file (a write error is a failure in the report),
    write ``report.json`` (listing ``extra`` files and the COCO file) and print the summary.
    Returns the exit code: 130 when interrupted, 1 when any file failed, else 0."""
    extra = list(extra or [])
    try:
        written = coco.write(Path(out_dir) / "keypoints_coco.json")
        extra += [written] if written else []
    except AtomicWriteError as exc:
        report.failure("keypoints_coco.json", exc)
    path = report.finish(extra, interrupted)
    if interrupted:
        return 130
    return 1 if report.failed or path is None else 0


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out DIR``, ``--format LIST`` (from the exporter registry) and ``--frame``, shared
    by the ``estimate`` and ``lift`` commands."""
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created if missing)")
    parser.add_argument("--format", default="json", metavar="LIST", help=formats_help())
    parser.add_argument("--frame", choices=FRAMES_3D, default=DEFAULT_FRAME,
                        help="origin of the exported 3D poses: pelvis (root-relative, the "
                        "default) or lifting (the lifting's own frame, origin near the joint "
                        "centroid); size-normalised millimetres, x right, y depth, z up")
