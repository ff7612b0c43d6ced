"""The person detector's time per photo with a fixed thread count of 1, 2 and the caller's
(None), alternating, on the bundled photos and the first N LSP-extended photos of
``../shared``; boxes compared between the settings.

    python scripts/bench_detector_threads.py --photos 10 --rounds 3
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poseviewer.detect import find_people, load_detector  # noqa: E402


def main() -> int:
    """Run the benchmark; 0 on success."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    paths = [str(ROOT / "resources" / n) for n in ("sample_fullbody.jpg", "sample.jpg")]
    paths += sorted(glob.glob(str(ROOT.parent / "shared" / "data" / "lspet" / "images"
                                  / "*.jpg")))[: args.photos]
    imgs = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths]
    det = load_detector()
    for img in imgs:  # warm-up
        find_people(img)
    print(f"{len(imgs)} photos, load average {os.getloadavg()}")
    times: dict[object, list[float]] = {1: [], 2: [], None: []}
    boxes: dict[object, list[np.ndarray]] = {}
    for _ in range(args.rounds):
        for threads in times:
            det.threads = threads
            t0 = time.perf_counter()
            got = [np.asarray(find_people(img)[0]) for img in imgs]
            times[threads].append((time.perf_counter() - t0) / len(imgs))
            boxes.setdefault(threads, got)
    for threads, ts in times.items():
        print(f"threads {threads!s:4s}: {np.median(ts) * 1e3:6.1f} ms a photo (median of "
              f"{len(ts)} rounds: {', '.join(f'{t * 1e3:.1f}' for t in ts)})")
    print(f"1 / 2 threads: {np.median(times[1]) / np.median(times[2]):.2f}x")
    diff = max((float(np.abs(a - b).max()) if a.size else 0.0)
               for a, b in zip(boxes[1], boxes[2], strict=True))
    print(f"largest box difference, 1 vs 2 threads: {diff:.2e} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
