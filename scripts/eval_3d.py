#!/usr/bin/env python3
"""Evaluate 3D pose models side by side: a wrapper for ``poseviewer eval-3d`` (same options).

Example (the numbers in docs/lifting.md and resources/models/pose3d_default.md):
  .venv/bin/python scripts/eval_3d.py --plot resources/models/pose3d_eval.png
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poseviewer.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["eval-3d", *sys.argv[1:]]))
