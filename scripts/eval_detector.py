#!/usr/bin/env python
"""Measure the person detectors (prints figures; not a test).

    nice -n 5 .venv/bin/python scripts/eval_detector.py [--methods movenet hog]
        [--every 1] [--hog-every 10] [--threads 1] [--weights PATH] [--min-score S]

* Recall of the annotated person over the LSP-extended photos (``../shared/data/lspet``:
  ``annotations.npz`` joints (N, 14, 3) x, y, v in LSP order, ``images/``): the person is
  found when some box holds at least 80 % of its labelled joints (v > 0). ``--every K``
  takes every K-th photo (1 = all 9,000); HOG is slow, so ``--hog-every`` subsamples it
  (the figures say on how many photos each method ran). Also: boxes per photo, the share
  of photos where the best box is the one that holds the person, and the detector's time
  per photo (decoding included, file reading excluded).
* The three dancers of ``../shared/reference/lftd/test_image.png``: each dancer's head and
  feet (positions read off the image by hand) inside one box.
* ``--time-dancers N``: only time N calls per method on the dancers photo (min and median;
  the minimum is the best estimate of the cost on a quiet machine).

The machine is shared with a training run: ``uptime`` is printed before and after.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poseviewer.detect import DEFAULT_DETECTOR, MIN_SCORE, find_people, load_detector  # noqa: E402
from poseviewer.imageio import load_image  # noqa: E402
from poseviewer.paths import shared_path  # noqa: E402

#: (head, left foot, right foot) of each dancer in test_image.png (1280 x 720), read off the
#: image by hand: left (red top), middle (blue T-shirt), right (blue top).
DANCERS = {
    "left": [(560, 75), (455, 575), (585, 600)],
    "middle": [(790, 170), (675, 535), (765, 550)],
    "right": [(1020, 130), (915, 575), (1085, 585)],
}


def holds(box: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Which of the points (K, 2) lie inside ``box`` (x0, y0, x1, y1)."""
    return ((pts[:, 0] >= box[0]) & (pts[:, 0] <= box[2]) & (pts[:, 1] >= box[1])
            & (pts[:, 1] <= box[3]))


def found_person(boxes: np.ndarray, joints: np.ndarray, share: float = 0.8) -> tuple[bool, bool]:
    """(some box holds >= ``share`` of the labelled joints, the best box does)."""
    lab = joints[joints[:, 2] > 0, :2]
    if len(lab) == 0:
        return True, True
    ok = [holds(b, lab).mean() >= share for b in boxes]
    return any(ok), bool(ok and ok[0])


def dancers(method: str, weights: str | None, min_score: float | None) -> str:
    path = shared_path("reference", "lftd", "test_image.png")
    if not path.is_file():
        return f"dancers: {path} absent"
    img = load_image(path).rgb
    boxes, scores = find_people(img, method=method, weights=weights, min_score=min_score)
    out = []
    for name, pts in DANCERS.items():
        inside = [i for i, b in enumerate(boxes) if holds(b, np.array(pts, float)).all()]
        out.append(f"{name}: {'box ' + str(inside[0]) if inside else 'MISSED'}")
    return f"dancers ({len(boxes)} boxes, scores {np.round(scores, 2).tolist()}): " + \
        ", ".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["movenet", "hog"])
    ap.add_argument("--every", type=int, default=1, help="take every K-th photo (movenet)")
    ap.add_argument("--hog-every", type=int, default=10, help="take every K-th photo (hog)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--min-score", type=float, default=None)
    ap.add_argument("--time-dancers", type=int, default=0, metavar="N",
                    help="only time N calls per method on the dancers photo (min, median)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.time_dancers:
        import statistics

        img = load_image(shared_path("reference", "lftd", "test_image.png")).rgb
        for method in args.methods:
            find_people(img, method=method, weights=args.weights)  # load, warm up
            ts = []
            for _ in range(args.time_dancers):
                t = time.perf_counter()
                find_people(img, method=method, weights=args.weights)
                ts.append(time.perf_counter() - t)
            print(f"{method} on the dancers photo (1280 x 720), {len(ts)} calls, "
                  f"{args.threads} thread(s): min {1000 * min(ts):.0f} ms, median "
                  f"{1000 * statistics.median(ts):.0f} ms")
        print("uptime:", subprocess.run(["uptime"], capture_output=True,
                                        text=True).stdout.strip())
        return 0
    root = shared_path("data", "lspet")
    with np.load(root / "annotations.npz", allow_pickle=False) as z:
        joints, names = z["joints"], z["image_names"]
    if "movenet" in args.methods:
        load_detector(args.weights)  # load once, outside the timing
    for method in args.methods:
        every = args.hog_every if method == "hog" else args.every
        idx = np.arange(0, len(names), every)
        hit = best = nboxes = 0
        secs = 0.0
        misses: list[str] = []
        for n, i in enumerate(idx):
            img = load_image(root / "images" / str(names[i])).rgb
            t = time.perf_counter()
            boxes, _ = find_people(img, method=method, weights=args.weights,
                                   min_score=args.min_score)
            secs += time.perf_counter() - t
            f, fb = found_person(boxes, joints[i])
            hit += f
            best += fb
            nboxes += len(boxes)
            if not f:
                misses.append(str(names[i]))
            if (n + 1) % 1000 == 0:
                print(f"  {method}: {n + 1}/{len(idx)} recall so far {hit / (n + 1):.4f}",
                      flush=True)
        m = len(idx)
        score = MIN_SCORE[method] if args.min_score is None else args.min_score
        print(f"{method} (min score {score}): recall {hit / m:.4f} ({hit}/{m} photos, every "
              f"{every}th), best box holds the person {best / m:.4f}, {nboxes / m:.2f} boxes "
              f"per photo, {1000 * secs / m:.1f} ms per photo ({args.threads} thread(s))")
        print(f"  first misses: {misses[:15]}")
        print("  " + dancers(method, args.weights, args.min_score))
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
