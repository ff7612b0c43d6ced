"""Convert the authors' TensorFlow checkpoint (PersonNet + PoseNet) to safetensors.

Reads CHECKPOINT_PREFIX.index and CHECKPOINT_PREFIX.data-00000-of-00001 without TensorFlow,
checks every tensor's name, shape and CRC-32C against the release architecture, permutes
HWIO -> OIHW and writes OUT/release_posenet.safetensors and OUT/release_personnet.safetensors
(config in the metadata). Use them with: poseviewer estimate --weights OUT/release_posenet...
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line arguments."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT_PREFIX",
                        help="checkpoint prefix, e.g. .../init_session/init (the .index path "
                             "works too)")
    parser.add_argument("out", metavar="OUT", help="output folder")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the CRC-32C check of the tensor data")


def run(args: argparse.Namespace) -> int:
    """Convert; 0 on success, 1 with a message on a bad checkpoint."""
    from poseviewer.checkpoint.bundle import CheckpointError
    from poseviewer.checkpoint.convert import convert_checkpoint

    t0 = time.perf_counter()
    try:
        written = convert_checkpoint(args.checkpoint, args.out, verify=not args.no_verify)
    except CheckpointError as exc:
        print(f"poseviewer convert-release: {exc}", file=sys.stderr)
        return 1
    for stem, path in written.items():
        print(f"{stem}: {path}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0
