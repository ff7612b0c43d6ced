#!/usr/bin/env python3
"""Time the 3D pose model training (goal: ~60,000 poses in under 2 minutes on 2 cores).

Trains the default model (K = 3, 25 bases, mirrored) on Human3.6M subjects 1, 5, 6, 7, 8
from ../shared and prints poses, EM iterations and seconds. Set OMP_NUM_THREADS to choose
the number of BLAS threads. Prints `uptime` too: other work on the machine skews figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poseviewer.train3d import load_h36m, train_pose_model  # noqa: E402


def main() -> int:
    """Run the benchmark and print the figures."""
    poses, _, _ = load_h36m()
    t0 = time.perf_counter()
    rep = train_pose_model(poses, progress=False)
    dt = time.perf_counter() - t0
    print(f"poses {len(poses)} (+ mirrored = {rep.meta['n_training_vectors']} vectors), "
          f"EM iterations {rep.fit.n_iter}, {dt:.1f} s "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
