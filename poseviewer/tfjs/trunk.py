"""A TF.js graph's convolutional part as named torch modules.

:func:`extract_trunk` walks the graph from an input node to an output node and turns every
op on the way into a small, JSON-serialisable op list (the *trunk spec*) plus torch
parameters named after the Keras layers (``block_1_expand.weight``, ``conv2d_3.bias``...).
:class:`poseviewer.cnn.graph_trunk.GraphTrunk` runs such a spec. Supported ops:
``_FusedConv2D`` (BiasAdd with optional Relu / Relu6), ``FusedDepthwiseConv2dNative``,
``DepthwiseConv2dNative``, ``Conv2D``, ``AddV2`` of two tensors, ``ResizeBilinear`` by an
integer factor (a constant size, or the Keras ``UpSampling2D`` pattern ``Shape(x)[1:3] *
factor`` of graphs with a dynamic input size), ``Pad`` (spatial, zeros), ``DepthToSpace``
(NHWC's DCR order), ``Relu``, ``Relu6``. A trunk may end in several nodes (e.g. a detector's
heads at three scales).

TensorFlow's 'SAME' padding puts the odd pixel at the right / bottom (it matters at stride
2): the spec records each convolution's padding and the runner pads as TF does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from poseviewer.tfjs.graph_model import GraphModel, GraphModelError, Node

_SUFFIX = re.compile(r"^(ReadVariableOp(_\d+)?|Conv2D|BiasAdd|depthwise|\w*_weights|"
                     r"\w*_bn_offset|StatefulPartitionedCall)$")
_ACTS = {"Relu": "relu", "Relu6": "relu6"}


def layer_name(weight_name: str) -> str:
    """The Keras layer a weight constant belongs to, e.g. ``.../model/block_1_expand/
    Conv2D_weights`` -> ``block_1_expand``, ``.../separable_conv2d_1/separable_conv2d/
    ReadVariableOp`` -> ``separable_conv2d_1``."""
    parts = [p for p in weight_name.split("/") if p]
    while len(parts) > 1 and _SUFFIX.match(parts[-1]):
        parts.pop()
    if len(parts) > 1 and parts[-2].startswith(parts[-1]):
        parts.pop()
    return re.sub(r"[^0-9A-Za-z_]", "_", parts[-1])


def _base(name: str) -> str:
    return name.split(":")[0]


def _ancestors(graph: GraphModel, output: str | Sequence[str], stop: str) -> list[str]:
    """Nodes needed to compute ``output`` (one name or several) from ``stop`` (exclusive),
    topologically ordered."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str) -> None:
        if name == stop or graph.nodes[name].op == "Const" or state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise GraphModelError(f"cycle at {name}")
        state[name] = 1
        node = graph.nodes.get(name)
        if node is None:
            raise GraphModelError(f"node {name} is not in the graph")
        if node.op == "Placeholder":
            raise GraphModelError(f"{output} depends on the graph input other than through "
                                  f"{stop}")
        for i in node.inputs:
            if not i.startswith("^"):
                visit(_base(i))
        state[name] = 2
        order.append(name)

    outputs = [output] if isinstance(output, str) else list(output)
    for o in outputs:
        if o not in graph.nodes:
            raise GraphModelError(f"output node {o} is not in the graph")
    if stop not in graph.nodes:
        raise GraphModelError(f"input node {stop} is not in the graph")
    for o in outputs:
        visit(o)
    return order


def _const(graph: GraphModel, name: str) -> np.ndarray:
    name = _base(name)
    if name not in graph.weights:
        raise GraphModelError(f"{name} is not a constant with stored weights")
    return graph.weights[name]


def extract_trunk(graph: GraphModel, input_node: str, output_node: str | Sequence[str],
                  native_size: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The ops between ``input_node`` and ``output_node`` as (spec, state dict).

    ``native_size``: the graph's input side; it fixes the integer factor of each resize
    and the trunk's stride. The spec: ``{"ops": [...], "stride", "out_channels"}`` where an
    op is ``{"name", "op": conv|dwconv|add|resize|pad|depth_to_space|act, "inputs", ...}``.
    With several output nodes, ``"outputs"`` and ``"strides"`` list them all (``"output"``,
    ``"stride"`` and ``"out_channels"`` describe the first); :meth:`GraphTrunk.forward_all`
    returns them all.
    """
    names = _ancestors(graph, output_node, input_node)
    ops: list[dict[str, Any]] = []
    state: dict[str, Tensor] = {}
    alias: dict[str, str] = {input_node: "input"}
    used: set[str] = set()
    size: dict[str, tuple[int, int | None]] = {"input": (native_size, None)}  # (side, chans)
    shapes: dict[str, tuple[Any, ...]] = {}  # int shape tensors feeding a resize

    def unique(base: str) -> str:
        n, k = base, 2
        while n in used:
            n, k = f"{base}_{k}", k + 1
        used.add(n)
        return n

    def src(i: str) -> str:
        b = _base(i)
        if b not in alias:
            raise GraphModelError(f"input {i} of the trunk is not computed inside it")
        return alias[b]

    for name in names:
        node: Node = graph.nodes[name]
        a = node.attr
        if a.get("data_format", "NHWC") != "NHWC":
            raise GraphModelError(f"{name}: only NHWC graphs are supported")
        if node.op in ("_FusedConv2D", "Conv2D", "FusedDepthwiseConv2dNative",
                       "DepthwiseConv2dNative"):
            depthwise = "Depthwise" in node.op
            w = _const(graph, node.inputs[1])
            fused = a.get("fused_ops", []) if node.op.startswith(("_Fused", "Fused")) else []
            if fused and fused[0] != "BiasAdd":
                raise GraphModelError(f"{name}: unsupported fused ops {fused}")
            bias = _const(graph, node.inputs[2]) if fused else None
            act = _ACTS.get(fused[1]) if len(fused) > 1 else None
            if len(fused) > 1 and act is None:
                raise GraphModelError(f"{name}: unsupported activation {fused[1]}")
            strides = a.get("strides", [1, 1, 1, 1])
            dil = a.get("dilations", [1, 1, 1, 1])
            if strides[1] != strides[2] or dil[1] != dil[2]:
                raise GraphModelError(f"{name}: non-square strides or dilations")
            kh, kw = int(w.shape[0]), int(w.shape[1])
            if kh != kw:
                raise GraphModelError(f"{name}: non-square kernel {w.shape}")
            base = layer_name(node.inputs[1])
            if depthwise and "depthwise" not in base:
                base += "_depthwise"
            mod = unique(base)
            if depthwise:
                c, m = int(w.shape[2]), int(w.shape[3])
                weight = torch.from_numpy(np.ascontiguousarray(
                    w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)))
                cin, cout, groups = c, c * m, c
            else:
                cin, cout, groups = int(w.shape[2]), int(w.shape[3]), 1
                weight = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
            state[f"layers.{mod}.weight"] = weight.float()
            if bias is not None:
                state[f"layers.{mod}.bias"] = torch.from_numpy(
                    np.asarray(bias, np.float32)).reshape(-1)
            side_in, ch_in = size[src(node.inputs[0])]
            if ch_in is not None and ch_in != cin:
                raise GraphModelError(f"{name}: expects {cin} channels, gets {ch_in}")
            s = int(strides[1])
            pad = a.get("padding", "SAME")
            side = math.ceil(side_in / s) if pad == "SAME" else (side_in - kh) // s + 1
            ops.append({"name": mod, "op": "dwconv" if depthwise else "conv",
                        "inputs": [src(node.inputs[0])], "kernel": kh, "stride": s,
                        "dilation": int(dil[1]), "padding": pad.lower(), "in": cin,
                        "out": cout, "groups": groups, "bias": bias is not None, "act": act})
            alias[name] = mod
            size[mod] = (side, cout)
        elif node.op in ("AddV2", "Add"):
            ins = [src(i) for i in node.inputs]
            if size[ins[0]] != size[ins[1]]:
                raise GraphModelError(f"{name}: adds {size[ins[0]]} and {size[ins[1]]}")
            mod = unique(f"add{len(ops)}")
            ops.append({"name": mod, "op": "add", "inputs": ins})
            alias[name] = mod
            size[mod] = size[ins[0]]
        elif node.op == "Shape":
            shapes[name] = ("shape", src(node.inputs[0]))
        elif node.op == "StridedSlice" and _base(node.inputs[0]) in shapes:
            kind, of = shapes[_base(node.inputs[0])][:2]
            begin, end, step = (_const(graph, i).reshape(-1).tolist() for i in node.inputs[1:4])
            masks = [a.get(m, 0) for m in ("begin_mask", "end_mask", "ellipsis_mask",
                                           "new_axis_mask", "shrink_axis_mask")]
            if kind != "shape" or (begin, end, step) != ([1], [3], [1]) or any(masks):
                raise GraphModelError(f"{name}: only the (height, width) slice of a shape is "
                                      "supported")
            shapes[name] = ("hw", of)
        elif node.op == "Mul" and _base(node.inputs[0]) in shapes:
            kind, of = shapes[_base(node.inputs[0])][:2]
            factor = np.unique(_const(graph, node.inputs[1]).reshape(-1))
            if kind != "hw" or factor.size != 1 or factor[0] < 1:
                raise GraphModelError(f"{name}: only (height, width) times one integer is "
                                      "supported as a resize size")
            shapes[name] = ("scaled", of, int(factor[0]))
        elif node.op == "ResizeBilinear":
            x = src(node.inputs[0])
            side, ch = size[x]
            if _base(node.inputs[1]) in shapes:
                expr = shapes[_base(node.inputs[1])]
                if expr[0] != "scaled" or expr[1] != x:
                    raise GraphModelError(f"{name}: the resize size is not a multiple of the "
                                          "resized tensor's own size")
                target = np.array([side * expr[2]] * 2)
            else:
                target = _const(graph, node.inputs[1]).reshape(-1)
            if target[0] != target[1] or target[0] % side:
                raise GraphModelError(f"{name}: resize {side} -> {target.tolist()} is not an "
                                      "integer factor")
            if not a.get("half_pixel_centers", False) or a.get("align_corners", False):
                raise GraphModelError(f"{name}: only half_pixel_centers resizing is supported")
            mod = unique(f"resize{len(ops)}")
            ops.append({"name": mod, "op": "resize", "inputs": [x],
                        "factor": int(target[0] // side)})
            alias[name] = mod
            size[mod] = (int(target[0]), ch)
        elif node.op == "Pad":
            x = src(node.inputs[0])
            pads = _const(graph, node.inputs[1]).astype(np.int64).reshape(-1, 2).tolist()
            if len(pads) != 4 or pads[0] != [0, 0] or pads[3] != [0, 0] or \
                    sum(pads[1]) != sum(pads[2]) or min(min(p) for p in pads) < 0:
                raise GraphModelError(f"{name}: only equal spatial zero padding is supported, "
                                      f"got {pads}")
            mod = unique(f"pad{len(ops)}")
            ops.append({"name": mod, "op": "pad", "inputs": [x],
                        "pads": [pads[1][0], pads[1][1], pads[2][0], pads[2][1]]})
            alias[name] = mod
            side, ch = size[x]
            size[mod] = (side + sum(pads[1]), ch)
        elif node.op == "DepthToSpace":
            x = src(node.inputs[0])
            block = int(a.get("block_size", 0))
            side, ch = size[x]
            if block < 2 or (ch is not None and ch % (block * block)):
                raise GraphModelError(f"{name}: depth to space by {block} of {ch} channels")
            mod = unique(f"d2s{len(ops)}")
            ops.append({"name": mod, "op": "depth_to_space", "inputs": [x], "block": block})
            alias[name] = mod
            size[mod] = (side * block, None if ch is None else ch // (block * block))
        elif node.op in _ACTS:
            x = src(node.inputs[0])
            mod = unique(f"act{len(ops)}")
            ops.append({"name": mod, "op": "act", "inputs": [x], "act": _ACTS[node.op]})
            alias[name] = mod
            size[mod] = size[x]
        elif node.op == "Identity":
            alias[name] = src(node.inputs[0])
        else:
            raise GraphModelError(f"{name}: op {node.op} is not supported in a trunk")
    outs = [alias[o] for o in ([output_node] if isinstance(output_node, str) else output_node)]
    strides = []
    for out in outs:
        side = size[out][0]
        if native_size % side:
            raise GraphModelError(f"output side {side} does not divide the input {native_size}")
        strides.append(native_size // side)
    spec = {"ops": ops, "output": outs[0], "stride": strides[0],
            "out_channels": size[outs[0]][1], "native_size": native_size}
    if not isinstance(output_node, str):
        spec["outputs"], spec["strides"] = outs, strides
    return spec, state


def input_affine(graph: GraphModel, placeholder: str, input_node: str) -> tuple[float, float]:
    """(scale, offset) with ``value at input_node = scale * pixel + offset`` for the chain of
    Cast / Sub / Mul / RealDiv / AddV2 by scalar or per-channel-equal constants."""
    chain = _ancestors(graph, input_node, placeholder)
    scale, offset = 1.0, 0.0
    for name in chain:
        node = graph.nodes[name]
        if node.op in ("Cast", "Identity", "Unpack", "Squeeze", "ExpandDims", "Pack"):
            continue
        consts = [i for i in node.inputs if _base(i) in graph.weights]
        if len(consts) != 1:
            raise GraphModelError(f"{name}: cannot fold op {node.op} into an input affine")
        c = np.unique(_const(graph, consts[0]).astype(np.float64))
        if c.size != 1:
            raise GraphModelError(f"{name}: per-channel constants are not supported")
        v = float(c[0])
        if node.op == "Sub":
            if _base(node.inputs[1]) != _base(consts[0]):
                raise GraphModelError(f"{name}: constant minus tensor is not supported")
            offset -= v
        elif node.op in ("AddV2", "Add"):
            offset += v
        elif node.op == "Mul":
            scale, offset = scale * v, offset * v
        elif node.op == "RealDiv":
            scale, offset = scale / v, offset / v
        else:
            raise GraphModelError(f"{name}: cannot fold op {node.op} into an input affine")
    return scale, offset
