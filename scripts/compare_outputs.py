#!/usr/bin/env python
"""Compare two output folders of ``poseviewer estimate`` (or ``lift``) field by field (a
check before and after a change; not a test).

    .venv/bin/python scripts/compare_outputs.py BEFORE AFTER [--same OLD NEW ...]

Every file in either folder: JSON (``report.json`` too) value by value; NPZ key by key
(bit-identical arrays, dtypes and shapes; ``*_json`` string arrays parsed as JSON); Parquet
(the schema with its metadata, every row); CSV and BVH as text. Timings (``timings``,
``seconds``, ``stage_seconds``) are left out; each folder's own path is replaced by
``<OUT>`` in strings, and ``--same OLD NEW`` treats two other paths as equal (e.g. the
source trees the models were read from). Prints one line per differing file and a
summary; exit code 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

SKIP = {"timings", "seconds", "stage_seconds"}


def _norm(x: Any, subs: list[tuple[str, str]]) -> Any:
    """``x`` without its timing keys, with the given path replacements in strings."""
    if isinstance(x, dict):
        return {k: _norm(v, subs) for k, v in x.items() if k not in SKIP}
    if isinstance(x, list):
        return [_norm(v, subs) for v in x]
    if isinstance(x, str):
        for old, new in subs:
            x = x.replace(old, new)
    return x


def _diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    if type(a) is not type(b):
        out.append(f"{where}: type {type(a).__name__} != {type(b).__name__}")
    elif isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'A' if k in a else 'B'}")
            else:
                _diff(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} != {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}[{i}]", out)
    elif isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}")


def compare_file(fa: Path, fb: Path, sa: list[tuple[str, str]],
                 sb: list[tuple[str, str]]) -> list[str]:
    """The differences between two files of the same name."""
    out: list[str] = []
    if fa.suffix == ".json":
        _diff(_norm(json.loads(fa.read_text()), sa), _norm(json.loads(fb.read_text()), sb),
              "", out)
    elif fa.suffix == ".npz":
        with np.load(fa, allow_pickle=False) as za, np.load(fb, allow_pickle=False) as zb:
            if set(za.files) != set(zb.files):
                out.append(f"keys only in one: {sorted(set(za.files) ^ set(zb.files))}")
            for k in sorted((set(za.files) & set(zb.files)) - SKIP):
                x, y = za[k], zb[k]
                if k.endswith("_json") and x.dtype.kind == y.dtype.kind == "U" \
                        and x.shape == y.shape:
                    _diff(_norm([json.loads(t) for t in x.ravel()], sa),
                          _norm([json.loads(t) for t in y.ravel()], sb), k, out)
                elif x.dtype != y.dtype or x.shape != y.shape:
                    out.append(f"{k}: {x.dtype}{x.shape} != {y.dtype}{y.shape}")
                elif x.dtype.kind in "US":
                    _diff(_norm(x.tolist(), sa), _norm(y.tolist(), sb), k, out)
                elif not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
                    d = np.nanmax(np.abs(x.astype(float) - y.astype(float)))
                    out.append(f"{k}: max |difference| {d:.3g}")
    elif fa.suffix == ".parquet":
        import pyarrow.parquet as pq

        ta, tb = pq.read_table(fa), pq.read_table(fb)
        if not ta.schema.equals(tb.schema, check_metadata=True):
            out.append("schema differs")
        _diff(_norm(ta.to_pylist(), sa), _norm(tb.to_pylist(), sb), "rows", out)
    else:
        ta, tb = _norm(fa.read_text(), sa), _norm(fb.read_text(), sb)
        if ta != tb:
            out.append("text differs")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--same", nargs=2, action="append", default=[], metavar=("OLD", "NEW"),
                    help="treat path OLD (in A) and NEW (in B) as equal (repeatable)")
    args = ap.parse_args(argv)
    a, b = args.a.resolve(), args.b.resolve()
    sa = [(str(a), "<OUT>")] + [(old, f"<SAME{i}>") for i, (old, _) in enumerate(args.same)]
    sb = [(str(b), "<OUT>")] + [(new, f"<SAME{i}>") for i, (_, new) in enumerate(args.same)]
    na = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    nb = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    bad = 0
    for n in sorted(na ^ nb):
        print(f"only in {'A' if n in na else 'B'}: {n}")
        bad += 1
    for n in sorted(na & nb):
        d = compare_file(a / n, b / n, sa, sb)
        if d:
            bad += 1
            print(f"differs {n}: {len(d)} field(s), e.g. " + "; ".join(d[:4]))
    print(f"{args.a} vs {args.b}: {len(na & nb)} files in both, {bad} differ or are "
          "missing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
