#!/usr/bin/env python
"""Benchmark ``poseviewer estimate`` engines on a folder of photos (prints figures; not a test).

    .venv/bin/python scripts/bench_batch.py [--n 200] [--images DIR] [--batch-size 8]
        [--engines plain,local,ray] [--workers 1] [--format json]

Copies the first ``--n`` photos of ``--images`` (default: ../shared's LSP-extended images)
into a temporary folder and runs, one after the other, in fresh processes:

* ``plain``: the one-image-at-a-time loop (``--engine plain``, the viewer's path);
* ``local``: parallel decoding + batches of images through the network;
* ``ray``: the Ray Data pipeline on this machine (Ray's start-up included).

For each: wall seconds of the command (model loading and start-up included), the batch's
own seconds from report.json, images per second on both, and the speed-up over ``plain``.
Prints ``uptime`` before and after: the machine is shared (another process may be
training a network); say so when quoting the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _benchutil import uptime  # noqa: E402  (scripts/ is on sys.path when run)

from poseviewer.paths import shared_dir  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="photos (default 200)")
    ap.add_argument("--images", type=Path, default=None,
                    help="folder of photos (default: ../shared/data/lspet/images)")
    ap.add_argument("--engines", default="plain,local,ray")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1, help="local: decoding processes")
    ap.add_argument("--format", default="json")
    ap.add_argument("--extra", default="", help="more arguments for every run, one string")
    args = ap.parse_args()

    src = args.images or shared_dir() / "data" / "lspet" / "images"
    photos = sorted(p for p in Path(src).glob("*") if p.suffix.lower() in (".jpg", ".png"))
    photos = photos[:args.n]
    if not photos:
        print(f"no photos in {src}", file=sys.stderr)
        return 2
    exe = Path(sys.executable).with_name("poseviewer")
    cmd0 = [str(exe)] if exe.exists() else [sys.executable, "-m", "poseviewer.cli"]
    print(f"bench_batch: {len(photos)} photos from {src}; batch size {args.batch_size}")
    print(f"uptime before: {uptime()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for p in photos:
            shutil.copy(p, folder / p.name)
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            out = Path(tmp) / f"out-{engine}"
            cmd = [*cmd0, "estimate", str(folder), "--out", str(out), "--engine", engine,
                   "--no-progress", "--format", args.format, *args.extra.split()]
            if engine != "plain":
                cmd += ["--batch-size", str(args.batch_size)]
            if engine == "local":
                cmd += ["--workers", str(args.workers)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            rep = out / "report.json"
            if not rep.is_file():
                print(f"{engine}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}")
                continue
            doc = json.loads(rep.read_text())
            rows.append((engine, wall, float(doc["seconds"]), int(doc["succeeded"]),
                         int(doc["failed"])))
            print(f"{engine:>6}: {wall:8.1f} s wall, {doc['seconds']:8.1f} s batch, "
                  f"{doc['succeeded']} ok, {doc['failed']} failed  ({uptime()})", flush=True)
    print(f"uptime after: {uptime()}")
    if not rows:
        return 1
    base = next((r for r in rows if r[0] == "plain"), None)
    print("\nengine   images/s (wall)   images/s (batch)   speed-up vs plain (wall, batch)")
    for engine, wall, batch, ok, failed in rows:
        n = ok + failed
        ratio = "" if base is None else f"{base[1] / wall:5.2f}x, {base[2] / batch:5.2f}x"
        print(f"{engine:>6}   {n / wall:14.2f}   {n / batch:16.2f}   {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
