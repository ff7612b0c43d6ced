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


def report_path(path: str | os.PathLike[str], item: str | None = None) -> str:
    """How ``report.json`` writes a path: absolute (``os.path.abspath``: the current folder
    joined, ``..`` resolved, links kept), whatever the command line said; ``item`` names a
    part of the file (an image inside an imported JSON) as ``path [item]``."""
    text = os.path.abspath(os.fspath(path))
    return f"{text} [{item}]" if item is not None else text


def print_failure(source: str, msg: str) -> None:
    """Print one FAILED line, once, on stderr (above any progress bar)."""
    from tqdm import tqdm

    tqdm.write(f"FAILED {source}: {msg}", file=sys.stderr)


class Report:
    """Per-file outcomes: each failure printed once as it happens (stderr), all of them in
    ``report.json`` (every path absolute: :func:`report_path`)."""

    def __init__(self, command: str, out_dir: Path) -> None:
        self.command = command
        self.out_dir = out_dir
        self.ok: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self._order: dict[int, float] = {}  # id(entry) -> its place in report.json
        self.t0 = time.perf_counter()

    def _add(self, entries: list[dict[str, Any]], entry: dict[str, Any],
             order: int | None) -> None:
        entries.append(entry)
        self._order[id(entry)] = len(self._order) if order is None else order

    def success(self, source: str | os.PathLike[str], outputs: list[Path], persons: int,
                messages: list[str], implausible: int = 0, item: str | None = None,
                extra: dict[str, Any] | None = None, order: int | None = None) -> None:
        """Record a file that gave ``outputs`` (``persons`` people, ``implausible`` of them
        lifted to a pose that is not believable, the result's messages; ``extra``: more
        keys for its entry, e.g. a video's frame and track counts; ``order``: its place
        among the inputs, when they are not recorded in their order)."""
        self._add(self.ok, {"input": report_path(source, item), "persons": persons,
                            "implausible": implausible,
                            "outputs": [report_path(p) for p in outputs],
                            "messages": messages, **(extra or {})}, order)

    def failure(self, source: str | os.PathLike[str], exc: BaseException | str,
                item: str | None = None, order: int | None = None) -> None:
        """Record and print a failed file (``exc``: the exception, or its message already
        formatted as 'Type: message'; ``order``: as for :meth:`success`)."""
        msg = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        source = report_path(source, item)
        self._add(self.failed, {"input": source, "error": msg}, order)
        print_failure(source, msg)

    def finish(self, extra_outputs: list[Path] | None = None,
               interrupted: bool = False) -> Path | None:
        """Write ``report.json`` and print the summary (the failures were printed as they
        happened); returns the path (None when it could not be written: the reason is
        printed, no traceback)."""
        n = len(self.ok) + len(self.failed)
        for entries in (self.ok, self.failed):  # the inputs' order (stable)
            entries.sort(key=lambda e: self._order[id(e)])
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
            "person_frames": sum(r.get("person_frames", 0) for r in self.ok),
            "implausible_person_frames": sum(r.get("implausible_person_frames", 0)
                                             for r in self.ok),
            "results": self.ok,
            "other_outputs": [report_path(p) for p in extra_outputs or []],
        }
        try:
            path = atomic_write_text(self.out_dir / "report.json",
                                     json.dumps(doc, indent=1) + "\n")
        except AtomicWriteError as exc:  # e.g. the folder became unwritable meanwhile
            print(f"poseviewer {self.command}: {exc}", file=sys.stderr)
            path = None
        people = sum(r["persons"] for r in self.ok)
        odd = sum(r.get("implausible", 0) for r in self.ok)
        video = ""
        if doc["person_frames"]:
            video = (f"; in videos {doc['implausible_person_frames']} of "
                     f"{doc['person_frames']} people-in-frames implausible")
        print(f"{self.command}: {len(self.ok)} of {n} succeeded, {len(self.failed)} failed"
              f"{' (interrupted)' if interrupted else ''}; {people} people, {odd} of them "
              f"with an implausible 3D pose{video}; report: "
              f"{report_path(path) if path else None}")
        return path


def missing_inputs(command: str, problems: list[tuple[str, str]]) -> int:
    """The exit-code rule for inputs: a path on the command line that does not exist (or a
    folder without anything to read) is a usage error, whether or not other paths are
    good: each is printed once on stderr, nothing runs, nothing is written, exit 2.
    Returns 2 when there were such paths, else 0."""
    for path, why in problems:
        print(f"poseviewer {command}: {path}: {why}", file=sys.stderr)
    return 2 if problems else 0


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
        report.failure(Path(out_dir) / "keypoints_coco.json", exc)
    path = report.finish(extra, interrupted)
    if interrupted:
        return 130
    return 1 if report.failed or path is None else 0


#: The batch commands' exit codes and report (their --help epilog; README "Rules").
EXIT_RULE = """\
exit codes: 0 every input succeeded; 1 some input failed (unreadable, corrupt, ...: each
printed once on stderr as 'FAILED path: reason', all listed in report.json; the others
still ran); 2 usage error, nothing ran and nothing was written: a bad option, a path that
does not exist (even among good ones), a folder with nothing to read, a model or an output
folder that cannot be used; 130 interrupted (report.json says so).
report.json: every path in it is absolute."""


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out DIR``, ``--format LIST`` (from the exporter registry) and ``--frame``, shared
    by the ``estimate`` and ``lift`` commands (and their exit-code rule as the epilog)."""
    parser.epilog = EXIT_RULE
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created if missing)")
    parser.add_argument("--format", default="json", metavar="LIST", help=formats_help())
    parser.add_argument("--frame", choices=FRAMES_3D, default=DEFAULT_FRAME,
                        help="origin of the exported 3D poses: pelvis (root-relative, the "
                        "default) or lifting (the lifting's own frame, origin near the joint "
                        "centroid); size-normalised millimetres, x right, y depth, z up")


def add_elevation_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-elevation-search`` (estimate, lift): the 3D model's ``elevation_search``, on
    by default; ``--elevation-search`` is accepted and changes nothing."""
    parser.add_argument("--elevation-search", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="the 3D fit finds the camera's elevation as well as the yaw "
                        "(photos taken from above or below; exported as the fit's "
                        "elevation): the default; --no-elevation-search fits the release's "
                        "level camera (yaw only)")


def fov_degrees(text: str) -> float:
    """``--fov`` value: degrees, 0 (orthographic) or strictly between 0 and 180."""
    from poseviewer.camera import check_fov

    try:
        return check_fov(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_fov_argument(parser: argparse.ArgumentParser) -> None:
    """``--fov DEG`` (estimate, lift): the photo's field of view for the lifting along each
    person's camera ray (``poseviewer.camera``)."""
    from poseviewer.camera import DEFAULT_FOV_DEG

    parser.add_argument("--fov", type=fov_degrees, default=None, metavar="DEG",
                        help="the camera's field of view across the image's longer side, "
                        "degrees: each person's joints are seen along their own ray from "
                        f"the camera before the 3D fit (default {DEFAULT_FOV_DEG:g}; 0: "
                        "orthographic, every person as if on the optical axis)")
