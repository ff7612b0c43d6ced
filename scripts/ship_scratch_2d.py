"""Ship a tuned ``train-2d`` run as the default 2D model (weights, model card, plot).

    .venv/bin/python scripts/ship_default_2d.py RUN_DIR EVAL_REPORT.json [EXTRA.json]

``EVAL_REPORT.json``: what ``poseviewer eval-2d --json`` wrote for ``RUN_DIR/tuned.safetensors``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from poseviewer.paths import MODELS_DIR
from poseviewer.train2d.loop import read_log
from poseviewer.train2d.ship import model_card, ship_weights, write_text_atomic


def main() -> None:
    """Write resources/models/cpm_scratch.{safetensors,md} and cpm_scratch_training.png."""
    run = Path(sys.argv[1])
    report = json.loads(Path(sys.argv[2]).read_text())
    dst = MODELS_DIR / "cpm_scratch.safetensors"
    recs = read_log(run / "log.jsonl")
    meta = {
        "val_pck": report["plain"]["mean_per_stage"],
        "val_pck_fusion": report.get("fusion", {}).get("mean_per_stage"),
        "epochs": len(recs),
        "steps": recs[-1]["step"],
        "data": "LSP-extended (research use), 8000 train / 1000 val, split seed 2017",
        "trained_by": "poseviewer train-2d",
        "licence": "MIT (weights); training data research use",
        "pose_model": "pose3d_default.safetensors",
    }
    model = ship_weights(run / "tuned.safetensors", dst, meta)
    shutil.copyfile(run / "training.png", MODELS_DIR / "cpm_scratch_training.png")
    extra = json.loads(Path(sys.argv[3]).read_text()) if len(sys.argv) > 3 else {}
    extra["weights"] = str(dst.relative_to(MODELS_DIR.parents[1]))
    write_text_atomic(MODELS_DIR / "cpm_scratch.md", model_card(report, run, model, extra))
    print("shipped", dst.stat().st_size)


if __name__ == "__main__":
    main()
