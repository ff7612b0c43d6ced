"""The one list of export formats: it drives ``--format`` and its help text, the viewer's
File > Export menu and :func:`export_result`. Add a format here and it appears everywhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from poseviewer.export._io import DEFAULT_FRAME, fit_values
from poseviewer.export.bvh import write_bvh
from poseviewer.export.coco import write_coco
from poseviewer.export.csv_format import write_csv
from poseviewer.export.json_format import write_json
from poseviewer.export.npz_format import write_npz
from poseviewer.export.video import (
    bvh_animation_text,
    track_animations,
    write_sequence_coco,
    write_sequence_csv,
    write_sequence_json,
    write_sequence_npz,
)
from poseviewer.result import EstimateResult, ResultSequence


@dataclass(frozen=True)
class ExportOptions:
    """What to write: the 3D frame, the maps (NPZ), and the selection for the formats that
    write one pose or one stage (BVH: person, stage, component; COCO: stage)."""

    frame: str = DEFAULT_FRAME
    """'pelvis' (root-relative, default) or 'lifting' (the lifting's own frame)."""
    save_maps: bool = False
    person: int = 0
    stage: int = -1
    component: int | None = None
    """None: the best component."""


Writer = Callable[[EstimateResult, "str | os.PathLike[str]", ExportOptions], Path]
#: (sequence, output folder, stem, options) -> the files written
SequenceWriter = Callable[[ResultSequence, Path, str, ExportOptions], "list[Path]"]


def _bvh_per_id(seq: ResultSequence, out: Path, stem: str, o: ExportOptions) -> list[Path]:
    from poseviewer.atomic import atomic_write_text

    return [atomic_write_text(out / f"{stem}_person{a.track_id}.bvh",
                              bvh_animation_text(a.pose_3d, a.frame_step(seq)))
            for a in track_animations(seq, stage=o.stage)]


@dataclass(frozen=True)
class Exporter:
    """One export format."""

    name: str
    suffix: str
    label: str
    """Menu label."""
    file_filter: str
    """File-dialog filter."""
    help: str
    """One line for ``--format`` help."""
    write: Writer
    per_person: bool = False
    """Batch: one file per lifted person, ``<stem>_person<P><suffix>``."""
    collect: bool = False
    """Batch: the commands gather every image into one file (``keypoints_coco.json``)."""
    write_sequence: SequenceWriter | None = None
    """A video's results (``poseviewer.export.video``): the files for one sequence."""


EXPORTERS: dict[str, Exporter] = {e.name: e for e in (
    Exporter("json", ".json", "JSON (full result)...", "JSON (*.json)",
             "full result, reopens in the viewer",
             lambda r, p, o: write_json(r, p, frame=o.frame),
             write_sequence=lambda s, d, n, o: [write_sequence_json(s, d / f"{n}.json",
                                                                    o.frame)]),
    Exporter("csv", ".csv", "CSV (long format)...", "CSV (*.csv)",
             "one row per person/stage/component/joint",
             lambda r, p, o: write_csv(r, p, frame=o.frame),
             write_sequence=lambda s, d, n, o: [write_sequence_csv(s, d / f"{n}.csv",
                                                                   o.frame)]),
    Exporter("npz", ".npz", "NPZ (numpy arrays)...", "NumPy archive (*.npz)",
             "plain numpy arrays (--save-maps adds the belief maps)",
             lambda r, p, o: write_npz(r, p, save_maps=o.save_maps, frame=o.frame),
             write_sequence=lambda s, d, n, o: [write_sequence_npz(s, d / f"{n}.npz",
                                                                   o.frame)]),
    Exporter("bvh", ".bvh", "BVH (3D pose for Blender, ...)...", "BVH (*.bvh)",
             "one 3D pose per lifted person, root at the origin",
             lambda r, p, o: write_bvh(r, p, person=o.person, stage=o.stage,
                                       component=o.component, frame=o.frame),
             per_person=True, write_sequence=_bvh_per_id),
    Exporter("coco", ".coco.json", "COCO keypoints (2D)...", "COCO JSON (*.json)",
             "2D keypoints of every image in one keypoints_coco.json",
             lambda r, p, o: write_coco(r, p, stage=o.stage), collect=True,
             write_sequence=lambda s, d, n, o: [write_sequence_coco(
                 s, d / f"{n}.coco.json", stage=o.stage)]),
)}

#: format name -> file suffix; the format names in order
EXTENSIONS: dict[str, str] = {name: e.suffix for name, e in EXPORTERS.items()}
FORMATS: tuple[str, ...] = tuple(EXPORTERS)


def formats_help() -> str:
    """The ``--format`` help text."""
    return "comma-separated list (default: json): " + "; ".join(
        f"{e.name}: {e.help}" for e in EXPORTERS.values())


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """'json,csv' (or a list) -> ('json', 'csv'); ValueError naming unknown formats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip().lower() for s in items if s.strip()]
    bad = [n for n in names if n not in EXPORTERS]
    if bad or not names:
        raise ValueError(f"unknown export format(s) {', '.join(bad) or '(none given)'}; "
                         f"choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(names))


def export_result(result: EstimateResult, out_dir: str | os.PathLike[str], stem: str,
                  formats: Iterable[str] = FORMATS, save_maps: bool = False,
                  frame: str = DEFAULT_FRAME) -> list[Path]:
    """Write ``result`` in each format into ``out_dir`` as ``<stem><suffix>``; returns the
    files written. Per-person formats (BVH): the final stage's best component of every
    lifted person, ``<stem>_person<P><suffix>``."""
    out = Path(out_dir)
    written: list[Path] = []
    for name in parse_formats(list(formats)):
        e = EXPORTERS[name]
        if not e.per_person:
            written.append(e.write(result, out / f"{stem}{e.suffix}",
                                   ExportOptions(frame=frame, save_maps=save_maps)))
            continue
        for p, person in enumerate(result.persons):
            vals = fit_values(person.final.fit)
            if vals is not None and bool(vals[0]["lifted"]):
                written.append(e.write(result, out / f"{stem}_person{p}{e.suffix}",
                                       ExportOptions(frame=frame, person=p)))
    return written


def export_sequence(seq: ResultSequence, out_dir: str | os.PathLike[str], stem: str,
                    formats: Iterable[str] = FORMATS, frame: str = DEFAULT_FRAME
                    ) -> list[Path]:
    """Write a video's results in each format into ``out_dir``: ``<stem>.json|.csv|.npz``
    with a frame axis, ``<stem>.coco.json`` (one image per frame) and one
    ``<stem>_person<ID>.bvh`` animation per person id that was lifted. Returns the files."""
    out = Path(out_dir)
    written: list[Path] = []
    for name in parse_formats(list(formats)):
        e = EXPORTERS[name]
        if e.write_sequence is None:
            raise ValueError(f"format {name!r} cannot hold a video's results")
        written += e.write_sequence(seq, out, stem, ExportOptions(frame=frame))
    return written
