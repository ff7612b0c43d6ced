"""Choose the default network's ``box_fill`` on training photos (never the validation split).

    .venv/bin/python scripts/select_box_fill.py WEIGHTS [--images 150]
        [--fills 0.7 0.75 0.8 0.85 0.9]

``box_fill`` is how much of the network's square input a person box's longer side covers
when the Estimator cuts the crop. The default person detector runs once on each of the first
``--images`` training photos of the fixed split; where it finds the annotated person (a box
holding at least 80 % of its labelled joints) the Estimator (fusion on, as the weights are
set up otherwise) estimates it from that box at every candidate fill, and the PCK@0.2 of the
final joints is printed per fill (JSON lines, then the best).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import cv2
import numpy as np
import torch

from poseviewer.cnn import load_cpm
from poseviewer.detect import find_people
from poseviewer.estimator import Estimator
from poseviewer.lifting import load_pose_model
from poseviewer.paths import shared_path
from poseviewer.train2d.data import load_annotations, split_indices
from poseviewer.train2d.evaluate import pck


def main() -> None:
    """Detect once, estimate at every fill, print PCK per fill."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--fills", type=float, nargs="+", default=[0.7, 0.75, 0.8, 0.85, 0.9])
    ap.add_argument("--json", default=None,
                    help="also write the rows here (for ship_default_2d.py --box-fill-selection)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    root = shared_path("data", "lspet")
    ann = load_annotations(root)
    train, _ = split_indices(len(ann.names), 1000, 2017)
    idx = np.sort(train)[: args.images]
    model = load_cpm(args.weights)
    pose_model = load_pose_model(None)
    found = []
    for i in idx:
        img = cv2.imread(str(root / "images" / str(ann.names[i])))[..., ::-1].copy()
        j, v = ann.joints[i], ann.visible[i]
        best = None
        for b in find_people(img)[0]:
            inside = float(((j[v, 0] >= b[0]) & (j[v, 0] <= b[2]) & (j[v, 1] >= b[1])
                            & (j[v, 1] <= b[3])).mean())
            if inside >= 0.8 and (best is None or inside > best[0]):
                best = (inside, b)
        if best is not None:
            found.append((img, best[1], j, v))
    rows = []
    base = model.config
    for fill in args.fills:
        model.config = dataclasses.replace(base, box_fill=fill)
        est = Estimator(model, pose_model, device="cpu", detector=None)
        preds = [est.estimate(img, boxes=[box]).persons[0].final.joints_2d
                 for img, box, _, _ in found]
        correct, evaluated = pck(np.array(preds)[None], np.array([f[2] for f in found]),
                                 np.array([f[3] for f in found]))
        rows.append({"box_fill": fill, "pck": round(float(correct.sum() / evaluated.sum()), 4),
                     "photos": int(len(idx)), "found": len(found)})
        print(json.dumps(rows[-1]), flush=True)
    print("best:", json.dumps(max(rows, key=lambda r: r["pck"])))
    if args.json:
        from poseviewer.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
