"""TF.js graph-model reader and GraphTrunk, on a small graph model the test writes itself.

The expected outputs come from a direct numpy implementation of the TensorFlow ops (NHWC,
'SAME' padding with the odd pixel at the right/bottom, half-pixel bilinear resizing), not
from the code under test.
"""

from __future__ import annotations

import base64
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from poseviewer.cnn.graph_trunk import GraphTrunk
from poseviewer.tfjs.graph_model import (
    GraphModelError,
    read_graph_model,
    read_graph_model_from_tarball,
)
from poseviewer.tfjs.trunk import extract_trunk, input_affine, layer_name

RNG = np.random.default_rng(7)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _conv_node(name, x, w, b, strides=1, act=None, padding="SAME", depthwise=False):
    fused = ["BiasAdd"] + ([act] if act else [])
    return {"name": name, "op": "FusedDepthwiseConv2dNative" if depthwise else "_FusedConv2D",
            "input": [x, w, b],
            "attr": {"strides": {"list": {"i": ["1", str(strides), str(strides), "1"]}},
                     "padding": {"s": _b64(padding)},
                     "data_format": {"s": _b64("NHWC")},
                     "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
                     "fused_ops": {"list": {"s": [_b64(f) for f in fused]}}}}


def _const(name):
    return {"name": name, "op": "Const", "attr": {}}


# ---- numpy reference of the TF ops ---------------------------------------------------------
def np_same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    h, w = x.shape[:2]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    return np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    """x (H, W, C), w (k, k, C, O) HWIO, TF 'SAME'."""
    k = w.shape[0]
    xp = np_same_pad(x, k, s)
    ho, wo = -(-x.shape[0] // s), -(-x.shape[1] // s)
    out = np.zeros((ho, wo, w.shape[3]))
    for i in range(ho):
        for j in range(wo):
            patch = xp[i * s:i * s + k, j * s:j * s + k]
            out[i, j] = np.einsum("hwc,hwco->o", patch, w) + b
    return out


def np_depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """w (k, k, C, 1), stride 1, 'SAME'."""
    k = w.shape[0]
    xp = np_same_pad(x, k, 1)
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.einsum("hwc,hwc->c", xp[i:i + k, j:j + k], w[..., 0]) + b
    return out


def np_resize2x(x: np.ndarray) -> np.ndarray:
    """Bilinear x2, half-pixel centres (TF half_pixel_centers=True), edge clamped."""
    h, w = x.shape[:2]

    def axis_weights(n):
        src = (np.arange(2 * n) + 0.5) / 2 - 0.5
        src = np.clip(src, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, src - lo

    ylo, yhi, fy = axis_weights(h)
    xlo, xhi, fx = axis_weights(w)
    top = x[ylo][:, xlo] * (1 - fx)[None, :, None] + x[ylo][:, xhi] * fx[None, :, None]
    bot = x[yhi][:, xlo] * (1 - fx)[None, :, None] + x[yhi][:, xhi] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


# ---- the fixture ---------------------------------------------------------------------------
def write_fixture(folder: Path) -> dict[str, np.ndarray]:
    """A 2-shard graph: x/127.5-1 -> conv3x3/2 relu6 -> dw3x3 relu -> conv1x1 -> (+ resize
    of a conv3x3/2 branch) -> output. Weights: float16, uint8 and float32."""
    w1 = RNG.normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32)
    b1 = RNG.normal(0, 0.1, 4).astype(np.float32)
    wd = RNG.normal(0, 0.3, (3, 3, 4, 1)).astype(np.float32)
    bd = RNG.normal(0, 0.1, 4).astype(np.float32)
    w2 = RNG.normal(0, 0.3, (1, 1, 4, 5)).astype(np.float32)
    b2 = np.zeros(5, np.float32)
    w3 = RNG.normal(0, 0.3, (3, 3, 4, 5)).astype(np.float32)
    b3 = RNG.normal(0, 0.1, 5).astype(np.float32)
    # quantise: w1 as float16, wd as uint8 (scale/min), the rest float32
    w1q = w1.astype(np.float16)
    lo, hi = float(wd.min()), float(wd.max())
    scale = (hi - lo) / 255
    wdq = np.round((wd - lo) / scale).astype(np.uint8)
    tensors = [
        ("mul_y", np.array(1 / 127.5, np.float32), None),
        ("sub_y", np.array(1.0, np.float32), None),
        ("model/conv_a/Conv2D_weights", w1q, {"dtype": "float16", "original_dtype": "float32"}),
        ("model/conv_a/Conv2D_bn_offset", b1, None),
        ("model/block_dw_depthwise/depthwise_weights", wdq,
         {"dtype": "uint8", "min": lo, "scale": scale, "original_dtype": "float32"}),
        ("model/block_dw_depthwise/depthwise_bn_offset", bd, None),
        ("model/proj/Conv2D_weights", w2, None),
        ("model/proj/Conv2D_bn_offset", b2, None),
        ("model/down/Conv2D/ReadVariableOp", w3, None),
        ("model/down/BiasAdd/ReadVariableOp", b3, None),
        ("up/size", np.array([8, 8], np.int32), None),
    ]
    specs, blob = [], b""
    for name, arr, quant in tensors:
        spec = {"name": name, "shape": list(arr.shape),
                "dtype": "int32" if arr.dtype == np.int32 else "float32"}
        if quant:
            spec["quantization"] = quant
        specs.append(spec)
        blob += arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    half = len(blob) // 2
    (folder / "g.bin").write_bytes(blob[:half])
    (folder / "g2.bin").write_bytes(blob[half:])
    nodes = [{"name": "input", "op": "Placeholder", "attr": {}},
             {"name": "cast", "op": "Cast", "input": ["input"], "attr": {}},
             {"name": "mul", "op": "Mul", "input": ["cast", "mul_y"], "attr": {}},
             {"name": "sub", "op": "Sub", "input": ["mul", "sub_y"], "attr": {}}]
    nodes += [_const(t[0]) for t in tensors]
    nodes += [
        _conv_node("model/conv_a_relu/Relu6", "sub", "model/conv_a/Conv2D_weights",
                   "model/conv_a/Conv2D_bn_offset", strides=2, act="Relu6"),
        _conv_node("model/block_dw_relu/Relu", "model/conv_a_relu/Relu6",
                   "model/block_dw_depthwise/depthwise_weights",
                   "model/block_dw_depthwise/depthwise_bn_offset", act="Relu", depthwise=True),
        _conv_node("model/proj_BN/FusedBatchNormV3", "model/block_dw_relu/Relu",
                   "model/proj/Conv2D_weights", "model/proj/Conv2D_bn_offset"),
        _conv_node("model/down/BiasAdd", "model/conv_a_relu/Relu6",
                   "model/down/Conv2D/ReadVariableOp", "model/down/BiasAdd/ReadVariableOp",
                   strides=2),
        {"name": "up/resize", "op": "ResizeBilinear", "input": ["model/down/BiasAdd", "up/size"],
         "attr": {"half_pixel_centers": {"b": True}, "align_corners": {"b": False}}},
        {"name": "out", "op": "AddV2", "input": ["model/proj_BN/FusedBatchNormV3", "up/resize"],
         "attr": {}},
    ]
    model = {"format": "graph-model", "modelTopology": {"node": nodes},
             "weightsManifest": [{"paths": ["g.bin", "g2.bin"], "weights": specs}]}
    (folder / "model.json").write_text(json.dumps(model))
    return {"w1": w1q.astype(np.float32), "b1": b1, "wd": wdq * scale + lo, "bd": bd,
            "w2": w2, "b2": b2, "w3": w3, "b3": b3}


def reference(x_pixels: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    x = x_pixels.astype(np.float64) / 127.5 - 1
    a = np.clip(np_conv(x, w["w1"], w["b1"], 2), 0, 6)
    d = np.maximum(np_depthwise(a, w["wd"], w["bd"]), 0)
    p = np_conv(d, w["w2"], w["b2"], 1)
    return p + np_resize2x(np_conv(a, w["w3"], w["b3"], 2))


def test_graph_trunk_matches_numpy_tf_semantics(tmp_path: Path) -> None:
    w = write_fixture(tmp_path)
    g = read_graph_model(tmp_path / "model.json")
    # the uint8 tensor decodes as q * scale + min
    np.testing.assert_allclose(g.weights["model/block_dw_depthwise/depthwise_weights"], w["wd"],
                               rtol=0, atol=1e-6)
    spec, state = extract_trunk(g, "sub", "out", native_size=16)
    assert spec["stride"] == 2 and spec["out_channels"] == 5
    assert [o["op"] for o in spec["ops"]] == ["conv", "dwconv", "conv", "conv", "resize", "add"]
    trunk = GraphTrunk(json.loads(json.dumps(spec)))  # the spec survives JSON
    trunk.load_state_dict(state)
    assert "layers.conv_a.weight" in state and "layers.block_dw_depthwise.weight" in state
    pixels = RNG.integers(0, 256, (16, 16, 3)).astype(np.float32)
    x = torch.from_numpy(pixels / 127.5 - 1).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        got = trunk(x)[0].permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(got, reference(pixels, w), rtol=0, atol=2e-5)
    scale, offset = input_affine(g, "input", "sub")
    assert scale == pytest.approx(1 / 127.5) and offset == pytest.approx(-1.0)


def test_tarball_reads_the_same_as_the_folder(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        for name in ("model.json", "g.bin", "g2.bin"):
            tf.add(tmp_path / name, arcname=f"package/models/{name}")
    a = read_graph_model(tmp_path / "model.json")
    b = read_graph_model_from_tarball(tgz, "package/models/model.json")
    assert a.weights.keys() == b.weights.keys()
    for k in a.weights:
        np.testing.assert_array_equal(a.weights[k], b.weights[k])
    with pytest.raises(GraphModelError, match="not in pkg.tgz"):
        read_graph_model_from_tarball(tgz, "package/models/other.json")


def test_broken_graph_models_are_refused_clearly(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    (tmp_path / "g2.bin").write_bytes((tmp_path / "g2.bin").read_bytes()[:-8])
    with pytest.raises(GraphModelError, match="weights end early|shards hold"):
        read_graph_model(tmp_path / "model.json")
    (tmp_path / "g2.bin").unlink()
    with pytest.raises(GraphModelError, match="weight shard not found"):
        read_graph_model(tmp_path / "model.json")
    (tmp_path / "bad.json").write_text("{\"format\": \"layers-model\"}")
    with pytest.raises(GraphModelError, match="not a TF.js graph model"):
        read_graph_model(tmp_path / "bad.json")
    with pytest.raises(GraphModelError, match="not found"):
        read_graph_model(tmp_path / "missing.json")


def test_unsupported_ops_name_the_node(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    d = json.loads((tmp_path / "model.json").read_text())
    for n in d["modelTopology"]["node"]:
        if n["name"] == "out":
            n["op"] = "Softmax"
            n["input"] = n["input"][:1]
    (tmp_path / "model.json").write_text(json.dumps(d))
    g = read_graph_model(tmp_path / "model.json")
    with pytest.raises(GraphModelError, match="out: op Softmax is not supported"):
        extract_trunk(g, "sub", "out", native_size=16)


def test_layer_names_follow_keras() -> None:
    p = "StatefulPartitionedCall/center_net/model_1/"
    assert layer_name(p + "model/block_1_expand/Conv2D_weights") == "block_1_expand"
    assert layer_name(p + "conv2d_3/Conv2D/ReadVariableOp") == "conv2d_3"
    assert layer_name(p + "separable_conv2d_1/separable_conv2d/ReadVariableOp") == \
        "separable_conv2d_1"
    assert layer_name(p + "separable_conv2d/separable_conv2d_weights") == "separable_conv2d"


def test_softmax_reading_recovers_a_subgrid_gaussian_and_its_mass() -> None:
    from poseviewer.cnn.ops import read_joints_softmax

    h, w, sigma = 20, 24, 1.3
    centres = [(10.3, 7.8), (3.0, 15.45), (0.0, 0.0)]  # the last on the border: no refinement
    yy, xx = np.mgrid[0:h, 0:w]
    maps = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
                     for cx, cy in centres])
    xy, conf = read_joints_softmax(torch.from_numpy(maps)[None].double())
    np.testing.assert_allclose(xy[0, :2].numpy(), np.array(centres[:2]), atol=1e-9)
    np.testing.assert_allclose(xy[0, 2].numpy(), [0.0, 0.0], atol=0)
    for j, (cx, cy) in enumerate(centres):
        ix, iy = int(round(cx)), int(round(cy))
        box = maps[j, max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2].sum()
        assert float(conf[0, j]) == pytest.approx(box / maps[j].sum(), rel=1e-9)


def _softmax_net(residual: bool):
    from dataclasses import replace

    from poseviewer.cnn.config import tiny_test
    from poseviewer.cnn.lifting_cpm import LiftingCPM

    cfg = replace(tiny_test(fusion=False), stage1=(("conv4_1_CPM", 1, 8), ("conv4_2_CPM", 1, 14)),
                  map_activation="softmax", joint_reading="softmax",
                  stage_residual=residual).validate()
    torch.manual_seed(0)
    return LiftingCPM(cfg).eval()


def test_softmax_maps_and_residual_stages() -> None:
    """b = exp(z - max z) per joint, background 1 - max_j b_j; a residual stage whose output
    conv is zero reproduces its input maps exactly."""
    net = _softmax_net(residual=True)
    last = net.layers[net._stages[0][-1]]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
    s1, s2 = out.stages[0], out.stages[1]
    z = s1.logits
    expect = torch.exp(z - z.amax(dim=(-2, -1), keepdim=True))
    torch.testing.assert_close(s1.cnn[:, :14], expect)
    torch.testing.assert_close(s1.cnn[:, 14], 1 - expect.amax(dim=1))
    assert float(s1.cnn[:, :14].amax()) == 1.0
    torch.testing.assert_close(s2.cnn, s1.cnn, atol=1e-6, rtol=0)
    torch.testing.assert_close(s2.joints, s1.joints)
    # without the residual the same zero conv gives flat maps (no information)
    plain = _softmax_net(residual=False)
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        flat = plain(x).stages[1].cnn[:, :14]
    torch.testing.assert_close(flat, torch.ones_like(flat))
