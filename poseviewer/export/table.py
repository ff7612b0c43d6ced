"""One table row per person: the final stage's 2D joints and the lifting's 3D pose, with
the columns taken from the field table (``poseviewer.result``), for the Parquet table the
batch engines write. Plain Python values (JSON-safe); pyarrow is imported only to write."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.atomic import atomic_open
from poseviewer.result import (
    FIT_FIELDS,
    PERSON_FIELDS,
    STAGE_FIELDS,
    EstimateResult,
    FieldSpec,
)

#: Columns before the field table's: the input file, its output stem, the person's index.
KEY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("input", "str", "the input file (as given)"),
    ("stem", "str", "the stem of the per-image output files"),
    ("person", "i8", "the person's index in the image"),
)

#: (level, spec) of every table column after the keys: the person's fields, the final
#: stage's fields and the final stage's fit (best component); column name = the NPZ key.
TABLE_FIELDS: tuple[tuple[str, FieldSpec], ...] = (
    *(("person", f) for f in PERSON_FIELDS),
    *(("stage", f) for f in STAGE_FIELDS),
    *(("fit", f) for f in FIT_FIELDS),
)


def _value(spec: FieldSpec, x: Any) -> Any:
    if x is None:
        return None
    if spec.dtype == "str":
        return str(x)
    a = np.asarray(x, dtype=spec.np_dtype)
    return a.tolist()


def person_rows(result: EstimateResult, source: str, stem: str,
                frame: str = "pelvis") -> list[dict[str, Any]]:
    """One row per person of ``result`` (3D poses root-relative when ``frame`` is
    'pelvis'); keys: :data:`KEY_COLUMNS` then the NPZ key of each :data:`TABLE_FIELDS`."""
    if frame == "pelvis":
        result = result.root_relative()
    rows = []
    for p, person in enumerate(result.persons):
        row: dict[str, Any] = {"input": source, "stem": stem, "person": p}
        stage = person.stages[-1] if person.stages else None
        fit = stage.fit if stage is not None else None
        for level, spec in TABLE_FIELDS:
            obj = {"person": person, "stage": stage, "fit": fit}[level]
            x = None if obj is None else getattr(obj, spec.name, None)
            if level == "fit" and x is not None:
                x = np.asarray(x)[0]  # a stage's fit holds one person
            row[spec.npz_key] = _value(spec, x)
        rows.append(row)
    return rows


def arrow_schema() -> Any:
    """The table's pyarrow schema: one column per key and field, nested lists for arrays;
    each field's shape, unit, frame and meaning in its metadata."""
    import pyarrow as pa

    base = {"f8": pa.float64(), "f4": pa.float32(), "i8": pa.int64(), "bool": pa.bool_(),
            "str": pa.string()}
    fields = [pa.field(name, base[dt], metadata={"description": d})
              for name, dt, d in KEY_COLUMNS]
    for level, spec in TABLE_FIELDS:
        t = base[spec.dtype]
        for _ in spec.shape:
            t = pa.list_(t)
        fields.append(pa.field(spec.npz_key, t, nullable=True, metadata={
            "level": level, "field": spec.name, "shape": json.dumps(list(spec.shape)),
            "unit": spec.unit, "frame": spec.frame, "description": spec.description}))
    return pa.schema(fields)


class ParquetTable:
    """Rows streamed into one Parquet file (row groups of ``flush_rows``), written
    atomically: the file appears, complete, at :meth:`close`; :meth:`abort` leaves none."""

    def __init__(self, path: str | os.PathLike[str], frame: str,
                 flush_rows: int = 4096) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.schema = arrow_schema().with_metadata({"poseviewer.frame_3d": frame})
        self.flush_rows = int(flush_rows)
        self.rows: list[dict[str, Any]] = []
        self.count = 0
        self._stack = contextlib.ExitStack()
        fh = self._stack.enter_context(atomic_open(self.path, "wb"))
        self._writer = pq.ParquetWriter(fh, self.schema)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows (dicts keyed by column name, as :func:`person_rows` gives)."""
        self.rows.extend(rows)
        if len(self.rows) >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self.rows:
            return
        cols = {f.name: [r.get(f.name) for r in self.rows] for f in self.schema}
        self._writer.write_table(pa.Table.from_pydict(cols, schema=self.schema))
        self.count += len(self.rows)
        self.rows = []

    def close(self) -> Path:
        """Write the rest and put the file in place; returns its path."""
        self._flush()
        self._writer.close()
        self._stack.close()
        return self.path

    def abort(self) -> None:
        """Drop the file being written."""
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


def read_table(path: str | os.PathLike[str]) -> Any:
    """The Parquet table as a ``pyarrow.Table``."""
    import pyarrow.parquet as pq

    return pq.read_table(path)
