"""What the elevation search costs a folder of photos: the default ``Estimator`` on the two
bundled photos and the first N LSP-extended photos of ``../shared``, each run twice (the
second pass finds the visibility patterns the cache kept), with the 3D model's
``elevation_search`` off, on, and off again; prints the mean lifting and total seconds a
photo from ``EstimateResult.timings`` and the ratio on / off.

    python scripts/bench_elevation.py --photos 20
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poseviewer.estimator import Estimator  # noqa: E402


def main() -> int:
    """Run the benchmark; 0 on success."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=20, help="LSP-extended photos (0: none)")
    args = ap.parse_args()
    photos = [str(ROOT / "resources" / n) for n in ("sample_fullbody.jpg", "sample.jpg")]
    photos += sorted(glob.glob(str(ROOT.parent / "shared" / "data" / "lspet" / "images"
                                   / "*.jpg")))[: args.photos]
    est = Estimator.default()
    est.estimate(photos[0])  # warm-up: weights, threads
    print(f"{len(photos)} photos, load average {os.getloadavg()}")
    totals = {}
    for label, on in (("off", False), ("on", True), ("off again", False)):
        est.elevation_search = on
        est.pose_model.pattern_cache.clear()
        for npass in (1, 2):
            lift, total = [], []
            for p in photos:
                t = est.estimate(p).timings
                lift.append(t.get("lift", 0.0))
                total.append(t["total"])
            totals[(label, npass)] = float(np.mean(total))
            print(f"elevation search {label:9s} pass {npass}: lift {np.mean(lift) * 1e3:7.1f} "
                  f"ms a photo (max {np.max(lift) * 1e3:.0f}), total "
                  f"{np.mean(total) * 1e3:6.0f} ms a photo")
    for npass in (1, 2):
        print(f"pass {npass}: on / off {totals[('on', npass)] / totals[('off', npass)]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
