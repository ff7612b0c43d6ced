"""GraphTrunk's detector ops: Pad, VALID stride-2 conv, DepthToSpace, a resize sized by
``Shape(x)[1:3] * 2`` (dynamic-size graphs), a bias-free Conv2D and several outputs.

The graph is written by the test; expected values come from numpy loops written from
TensorFlow's definitions (DepthToSpace: ``out[h*b+i, w*b+j, c] = in[h, w, (i*b+j)*C + c]``),
not from the code under test.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_tfjs import np_resize2x

from poseviewer.cnn.graph_trunk import GraphTrunk
from poseviewer.tfjs.graph_model import GraphModelError, read_graph_model
from poseviewer.tfjs.trunk import extract_trunk

RNG = np.random.default_rng(11)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _ints(v: list[int]) -> dict:
    return {"list": {"i": [str(i) for i in v]}}


def np_conv_valid(x: np.ndarray, w: np.ndarray, s: int) -> np.ndarray:
    k = w.shape[0]
    ho, wo = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    out = np.zeros((ho, wo, w.shape[3]))
    for i in range(ho):
        for j in range(wo):
            out[i, j] = np.einsum("hwc,hwco->o", x[i * s:i * s + k, j * s:j * s + k], w)
    return out


def np_depth_to_space(x: np.ndarray, b: int) -> np.ndarray:
    h, w, cb = x.shape
    c = cb // (b * b)
    out = np.zeros((h * b, w * b, c))
    for y in range(h):
        for xx in range(w):
            for i in range(b):
                for j in range(b):
                    out[y * b + i, xx * b + j] = x[y, xx, (i * b + j) * c:(i * b + j + 1) * c]
    return out


def write_graph(folder: Path, pads: list[list[int]] | None = None,
                begin: int = 1) -> dict[str, np.ndarray]:
    w1 = RNG.normal(0, 0.4, (3, 3, 3, 8)).astype(np.float32)
    b1 = RNG.normal(0, 0.2, 8).astype(np.float32)
    w2 = RNG.normal(0, 0.4, (1, 1, 8, 2)).astype(np.float32)
    consts = [("pad/paddings", np.array(pads or [[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)),
              ("c1/w", w1), ("c1/b", b1), ("c2/w", w2),
              ("sl/begin", np.array([begin], np.int32)), ("sl/end", np.array([3], np.int32)),
              ("sl/step", np.array([1], np.int32)), ("up/factor", np.array([2, 2], np.int32))]
    specs, blob = [], b""
    for name, arr in consts:
        specs.append({"name": name, "shape": list(arr.shape),
                      "dtype": "int32" if arr.dtype == np.int32 else "float32"})
        blob += arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    (folder / "g.bin").write_bytes(blob)
    conv_attr = {"strides": _ints([1, 2, 2, 1]), "padding": {"s": _b64("VALID")},
                 "data_format": {"s": _b64("NHWC")}, "dilations": _ints([1, 1, 1, 1])}
    nodes = [{"name": "input", "op": "Placeholder", "attr": {}}]
    nodes += [{"name": n, "op": "Const", "attr": {}} for n, _ in consts]
    nodes += [
        {"name": "pad", "op": "Pad", "input": ["input", "pad/paddings"], "attr": {}},
        {"name": "c1", "op": "_FusedConv2D", "input": ["pad", "c1/w", "c1/b"],
         "attr": {**conv_attr, "fused_ops": {"list": {"s": [_b64("BiasAdd"), _b64("Relu")]}}}},
        {"name": "d2s", "op": "DepthToSpace", "input": ["c1"],
         "attr": {"block_size": {"i": "2"}, "data_format": {"s": _b64("NHWC")}}},
        {"name": "shape", "op": "Shape", "input": ["c1"], "attr": {}},
        {"name": "sl", "op": "StridedSlice", "input": ["shape", "sl/begin", "sl/end", "sl/step"],
         "attr": {"begin_mask": {"i": "0"}, "end_mask": {"i": "0"}}},
        {"name": "size", "op": "Mul", "input": ["sl", "up/factor"], "attr": {}},
        {"name": "up", "op": "ResizeBilinear", "input": ["c1", "size"],
         "attr": {"half_pixel_centers": {"b": True}, "align_corners": {"b": False}}},
        {"name": "c2", "op": "Conv2D", "input": ["up", "c2/w"],
         "attr": {**conv_attr, "strides": _ints([1, 1, 1, 1])}},
        {"name": "out", "op": "AddV2", "input": ["d2s", "c2"], "attr": {}},
    ]
    model = {"format": "graph-model", "modelTopology": {"node": nodes},
             "weightsManifest": [{"paths": ["g.bin"], "weights": specs}]}
    (folder / "model.json").write_text(json.dumps(model))
    return {"w1": w1, "b1": b1, "w2": w2}


def reference(x: np.ndarray, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    xp = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    c1 = np.maximum(np_conv_valid(xp, w["w1"], 2) + w["b1"], 0)
    out = np_depth_to_space(c1, 2) + np_conv_valid(np_resize2x(c1), w["w2"], 1)
    return out, c1


@pytest.mark.parametrize("side", [8, 16])
def test_detector_ops_match_numpy(tmp_path: Path, side: int) -> None:
    w = write_graph(tmp_path)
    g = read_graph_model(tmp_path / "model.json")
    spec, state = extract_trunk(g, "input", ["out", "c1"], native_size=8)
    assert [o["op"] for o in spec["ops"]] == ["pad", "conv", "depth_to_space", "resize",
                                             "conv", "add"]
    assert spec["strides"] == [1, 2] and spec["out_channels"] == 2
    trunk = GraphTrunk(json.loads(json.dumps(spec)))
    trunk.load_state_dict(state)
    # the resize size follows the input (Shape x 2), so another input side works too
    x = RNG.normal(0, 1, (side, side, 3))
    with torch.no_grad():
        out, c1 = trunk.forward_all(torch.from_numpy(x).permute(2, 0, 1)[None].float())
        single = trunk(torch.from_numpy(x).permute(2, 0, 1)[None].float())
    ref_out, ref_c1 = reference(x, w)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).double().numpy(), ref_out, atol=2e-5)
    np.testing.assert_allclose(c1[0].permute(1, 2, 0).double().numpy(), ref_c1, atol=2e-5)
    assert torch.equal(single, out)


def test_unsupported_pad_and_size_patterns_name_the_node(tmp_path: Path) -> None:
    write_graph(tmp_path, pads=[[0, 0], [1, 1], [1, 1], [0, 2]])
    with pytest.raises(GraphModelError, match="pad: only equal spatial zero padding"):
        extract_trunk(read_graph_model(tmp_path / "model.json"), "input", "out", 8)
    write_graph(tmp_path, begin=0)
    with pytest.raises(GraphModelError, match="sl: only the .height, width. slice"):
        extract_trunk(read_graph_model(tmp_path / "model.json"), "input", "out", 8)
