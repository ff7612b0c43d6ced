"""int8 convolutions for a :class:`~poseviewer.cnn.lifting_cpm.LiftingCPM` (PyTorch's x86
quantised engine, which picks fbgemm or oneDNN kernels: AVX2 is enough).

Static post-training quantisation with FX graph mode (``torch.ao.quantization.quantize_fx``)
of the body of every stage head (by default) and, optionally, of the pretrained trunk (a
:class:`GraphTrunk`; ``trunk=True``: it cost 1.9 PCK points for little speed, so the
shipped calibration leaves it float32). What stays float32: each stage's output conv (a
cheap 1x1 conv to the joint logits, whose precision the sub-pixel joint reading needs), the
stage residual, the maps, the mirror pass, the joint reading and the fusion. A refinement
stage's first conv takes the previous stage's maps (0..1) and the trunk's features (another
range) as two convs added together, so that each input keeps its own quantisation scale.

Weights are quantised per output channel when the network is converted (from the float
weights of the network file); activations use the scales and zero points of a calibration
run (``scripts/calibrate_int8.py``: training crops of LSP-extended), which are shipped
beside the weights as safetensors (``<weights stem>.int8.safetensors``: each activation
observer's min and max, and the weights' SHA-256; no pickle). :func:`load_int8` reads
them, :func:`attach_int8` makes the network run its convolutions in int8
(``Estimator.precision`` does both).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poseviewer.atomic import atomic_write_bytes
from poseviewer.cnn.lifting_cpm import LiftingCPM
from poseviewer.cnn.weights import WeightsError

FORMAT = "poseviewer-cpm-int8-1"
#: The quantised engine (fbgemm's successor in PyTorch; AVX2 is enough).
ENGINE = "x86"
PRECISIONS = ("fp32", "int8")
#: Integer ranges of the activations (quint8) and of the weights (qint8, 7 bits).
ACT_RANGE = (0, 255)
WEIGHT_RANGE = (-64, 63)


class Int8Error(WeightsError):
    """The int8 calibration file is missing, unreadable or made for other weights."""


def calibration_path(weights: str | os.PathLike[str]) -> Path:
    """Where a network file's int8 calibration lives: ``<stem>.int8.safetensors`` beside
    it."""
    w = Path(weights)
    return w.with_name(w.stem + ".int8.safetensors")


def weights_digest(model: LiftingCPM) -> str:
    """SHA-256 over the network's float parameters (names, shapes, bytes): which weights a
    calibration belongs to."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().to("cpu", torch.float32).contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@contextmanager
def _quiet() -> Iterator[None]:
    """PyTorch marks torch.ao.quantization as deprecated (in favour of torchao, which is
    not installed here); the API works in this torch and the warnings would only repeat
    that on every load and first run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message=".*quantiz.*")
        yield


# ---- traceable pieces ----------------------------------------------------------------------
class _StaticTrunk(nn.Module):
    """A :class:`GraphTrunk` for one input size, written so that FX can trace it: the
    explicit 'SAME' pads and the depth-to-space shapes are fixed numbers."""

    def __init__(self, graph: nn.Module, size: int) -> None:
        super().__init__()
        self.layers = graph.layers  # shared with the float network (their weights)
        self.spec = graph.spec
        shapes: dict[str, tuple[int, int, int]] = {"input": (3, size, size)}
        self.plan: list[tuple[str, str, list[str], dict[str, Any]]] = []
        for name, kind, inputs, op in graph._plan:
            c, h, w = shapes[inputs[0]]
            extra: dict[str, Any] = {}
            if kind in ("conv", "dwconv"):
                k, s, d = op["kernel"], op["stride"], op["dilation"]
                eff = (k - 1) * d + 1
                if op["explicit_pad"]:
                    ph = max((math.ceil(h / s) - 1) * s + eff - h, 0)
                    pw = max((math.ceil(w / s) - 1) * s + eff - w, 0)
                    extra["pad"] = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
                    h, w = h + ph, w + pw
                conv = graph.layers[name]
                p = conv.padding[0]
                h, w = (h + 2 * p - eff) // s + 1, (w + 2 * p - eff) // s + 1
                c = op["out"]
            elif kind == "resize":
                h, w = h * op["factor"], w * op["factor"]
            elif kind == "pad":
                t, b, le, r = op["pads"]
                h, w = h + t + b, w + le + r
            elif kind == "depth_to_space":
                k = op["block"]
                extra["shape"] = (k, c // (k * k), h, w)
                c, h, w = c // (k * k), h * k, w * k
            shapes[name] = (c, h, w)
            self.plan.append((name, kind, inputs, {**op, **extra}))
        self.output = graph.spec["output"]

    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Tensor] = {"input": x}
        for name, kind, inputs, op in self.plan:
            a = values[inputs[0]]
            if kind in ("conv", "dwconv"):
                if "pad" in op:
                    a = F.pad(a, op["pad"])
                y = self.layers[name](a)
                act = op.get("act")
                if act == "relu":
                    y = F.relu(y)
                elif act == "relu6":
                    y = F.relu6(y)
            elif kind == "add":
                y = a + values[inputs[1]]
            elif kind == "resize":
                y = F.interpolate(a, scale_factor=float(op["factor"]), mode="bilinear",
                                  align_corners=False)
            elif kind == "pad":
                t, b, le, r = op["pads"]
                y = F.pad(a, (le, r, t, b))
            elif kind == "depth_to_space":
                k, c, h, w = op["shape"]
                y = a.reshape(-1, k, k, c, h, w).permute(0, 3, 4, 1, 5, 2) \
                    .reshape(-1, c, h * k, w * k)
            else:
                y = F.relu(a) if op["act"] == "relu" else F.relu6(a)
            values[name] = y
        return values[self.output]


class _HeadBody(nn.Module):
    """A stage head without its output conv: conv + ReLU layers. For a refinement stage
    (``split`` > 0) the first conv is two convs, on the first ``split`` input channels
    (the previous stage's maps) and on the rest (features), added."""

    def __init__(self, convs: list[nn.Conv2d], split: int) -> None:
        super().__init__()
        self.split = int(split)
        first = convs[0]
        if self.split:
            a = nn.Conv2d(self.split, first.out_channels, first.kernel_size,
                          padding=first.padding, bias=True)
            b = nn.Conv2d(first.in_channels - self.split, first.out_channels,
                          first.kernel_size, padding=first.padding, bias=False)
            with torch.no_grad():
                a.weight.copy_(first.weight[:, : self.split])
                a.bias.copy_(first.bias)
                b.weight.copy_(first.weight[:, self.split:])
            self.first_maps, self.first_feat = a, b
        else:
            self.first = first
        self.rest = nn.ModuleList(convs[1:])

    def forward(self, maps: Tensor, feat: Tensor) -> Tensor:
        if self.split:
            x = F.relu(self.first_maps(maps) + self.first_feat(feat))
        else:
            x = F.relu(self.first(feat))
        for conv in self.rest:
            x = F.relu(conv(x))
        return x


def _qconfig_mapping(observer: str) -> Any:
    """Activations quint8 over the full 0..255, weights qint8 per output channel,
    symmetric, within -64..63: without AVX512-VNNI the x86 kernels add pairs of u8 x s8
    products in int16, which cannot overflow with 7-bit weights (PyTorch's default keeps
    8-bit weights and halves the activations' range instead; on this network's trunk that
    cost ~6 PCK points, 7-bit weights cost little). ``observer``: 'histogram' to calibrate,
    'minmax' to load the ranges of a calibration file (they reproduce its scales)."""
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import (
        HistogramObserver,
        MinMaxObserver,
        PerChannelMinMaxObserver,
    )

    obs = HistogramObserver if observer == "histogram" else MinMaxObserver
    act = obs.with_args(dtype=torch.quint8, quant_min=ACT_RANGE[0], quant_max=ACT_RANGE[1])
    weight = PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
        quant_min=WEIGHT_RANGE[0], quant_max=WEIGHT_RANGE[1])
    return QConfigMapping().set_global(QConfig(activation=act, weight=weight))


def _relu6_observers(prepared: Any, relu6_convs: set[str]) -> set[str]:
    """Names of the activation observers right after a conv whose activation is ReLU6
    (fused as conv + ReLU: the observer's range, capped at 6, does the clipping)."""
    out = set()
    for node in prepared.graph.nodes:
        if node.op == "call_module" and "activation_post_process" in str(node.target):
            src = node.args[0]
            if getattr(src, "op", None) == "call_module" and str(src.target) in relu6_convs:
                out.add(str(node.target))
    return out


class Int8Parts(nn.Module):
    """The int8 pieces of one network (observed before :meth:`convert`, quantised after):
    the trunk (a graph trunk) and one head body per stage; each stage's output conv stays
    the float network's."""

    def __init__(self, model: LiftingCPM, observer: str = "histogram",
                 trunk: bool = False) -> None:
        super().__init__()
        from torch.ao.quantization.quantize_fx import prepare_fx

        cfg = model.config
        self.size = int(cfg.input_size)
        self.split = int(cfg.num_maps)
        self.digest = weights_digest(model)
        names = [model._stage1] + list(model._stages)
        self.first = {ns[0]: t for t, ns in enumerate(names)}
        self.outs = [model.layers[ns[-1]] for ns in names]  # float, shared with the model
        self.relu6: set[str] = set()
        self.trunk_plan: list[tuple[str, str, list[str], dict[str, Any]]] = []
        mapping = _qconfig_mapping(observer)
        with torch.no_grad(), _quiet():
            x = torch.zeros(1, 3, self.size, self.size)
            feat = model.trunk(x)
            maps = torch.zeros(1, self.split, *feat.shape[-2:])
            self.heads = nn.ModuleList(
                prepare_fx(copy_module(_HeadBody([model.layers[n] for n in ns[:-1]],
                                                 0 if t == 0 else self.split)),
                           mapping, (maps, feat))
                for t, ns in enumerate(names))
            self.trunk = self._prepare_trunk(model, observer, x) if trunk else None
        self.converted = False

    @property
    def quantises_trunk(self) -> bool:
        """Whether the trunk runs in int8 too (else only the stage heads)."""
        return self.trunk is not None

    def _prepare_trunk(self, model: LiftingCPM, observer: str, x: Tensor) -> Any:
        from torch.ao.quantization.quantize_fx import prepare_fx

        if model.graph is None:
            raise Int8Error(f"an int8 trunk needs a graph trunk; '{model.config.name}' has "
                            "none")
        trunk = copy_module(_StaticTrunk(model.graph, self.size))
        relu6, float_convs = set(), []
        for i, (name, kind, inputs, op) in enumerate(trunk.plan):
            if kind not in ("conv", "dwconv"):
                continue
            if "pad" in op:  # strided 'SAME' convs: their int8 kernels are slow here
                float_convs.append(f"layers.{name}")
            elif op.get("act") == "relu6":
                trunk.plan[i] = (name, kind, inputs, {**op, "act": "relu"})
                relu6.add(f"layers.{name}")
        mapping = _qconfig_mapping(observer)
        for name in float_convs:
            mapping.set_module_name(name, None)
        with _quiet():
            prepared = prepare_fx(trunk, mapping, (x,))
        self.relu6 = _relu6_observers(prepared, relu6)
        self.trunk_plan = trunk.plan
        """The trunk's ops (name, kind, inputs, settings; ReLU6 convs marked ReLU)."""
        return prepared

    # ---- running ---------------------------------------------------------------------------
    def run_trunk(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) float images -> the trunk's float features."""
        with _quiet():
            return self.trunk(images.float())

    def run_head(self, first_name: str, x: Tensor) -> Tensor:
        """The stage head whose first conv is ``first_name`` on its float input (previous
        maps then features, concatenated) -> the stage's float output."""
        t = self.first[first_name]
        x = x.float()
        with _quiet():
            y = self.heads[t](x, x) if t == 0 else self.heads[t](x[:, : self.split],
                                                                  x[:, self.split:])
        return self.outs[t](y)

    # ---- calibration state -----------------------------------------------------------------
    def _observers(self) -> dict[str, Any]:
        out = {}
        named = [(f"head{t}", h) for t, h in enumerate(self.heads)]
        for part, gm in named + ([("trunk", self.trunk)] if self.trunk is not None else []):
            for name, mod in gm.named_modules():
                if name.startswith("activation_post_process"):
                    out[f"{part}.{name}"] = mod
        return out

    def ranges(self) -> dict[str, Tensor]:
        """Each activation observer's (min, max) that reproduces its calibrated scale and
        zero point (capped at 6 after a ReLU6 conv); float32 (2,) tensors by name."""
        out = {}
        for key, obs in self._observers().items():
            scale, zp = obs.calculate_qparams()
            scale, zp = float(scale), int(zp)
            lo = (obs.quant_min - zp) * scale
            hi = (obs.quant_max - zp) * scale
            part, name = key.split(".", 1)
            if part == "trunk" and name in self.relu6:
                lo, hi = 0.0, min(hi, 6.0)
            out[key] = torch.tensor([lo, hi], dtype=torch.float32)
        return out

    def set_ranges(self, ranges: dict[str, Tensor]) -> None:
        """Load observer ranges (``ranges()`` of a calibration run); every observer needs
        one."""
        obs = self._observers()
        missing = sorted(set(obs) - set(ranges))
        extra = sorted(set(ranges) - set(obs))
        if missing or extra:
            raise Int8Error(f"the calibration does not fit this network: missing "
                            f"{missing[:3]}, unexpected {extra[:3]}")
        for key, mod in obs.items():
            r = ranges[key].float()
            if r.shape != (2,) or not bool(torch.isfinite(r).all()) or r[0] > r[1]:
                raise Int8Error(f"bad calibration range for {key}: {r.tolist()}")
            mod.min_val = r[0].clone()
            mod.max_val = r[1].clone()

    def convert(self) -> Int8Parts:
        """Quantise (in place): int8 weights from the float ones, the observers' scales."""
        from torch.ao.quantization.quantize_fx import convert_fx

        with _quiet():
            if self.trunk is not None:
                self.trunk = convert_fx(self.trunk)
            self.heads = nn.ModuleList(convert_fx(h) for h in self.heads)
        self.converted = True
        return self


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy (quantisation rewrites modules; the float network keeps its own)."""
    import copy

    return copy.deepcopy(module)


# ---- files -----------------------------------------------------------------------------------
def save_calibration(parts: Int8Parts, path: str | os.PathLike[str],
                     info: dict[str, Any] | None = None) -> Path:
    """Write the observers' ranges (safetensors, atomically) with the weights' digest."""
    from safetensors.torch import save

    meta = {k: json.dumps(v) for k, v in (info or {}).items()}
    meta.update(format=FORMAT, weights_sha256=parts.digest, engine=ENGINE,
                trunk=json.dumps(parts.quantises_trunk))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, save(parts.ranges(), metadata=meta))


def load_int8(model: LiftingCPM, path: str | os.PathLike[str]) -> Int8Parts:
    """The network's int8 pieces from a calibration file (made for these weights)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise Int8Error(f"int8 calibration not found: {path} (make it with "
                        "'python scripts/calibrate_int8.py', or use precision fp32)")
    if ENGINE not in torch.backends.quantized.supported_engines:
        raise Int8Error(f"this PyTorch build has no '{ENGINE}' quantised engine: use "
                        "precision fp32")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            ranges = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise Int8Error(f"cannot read the int8 calibration {path}: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise Int8Error(f"{path} is not an int8 calibration file (format "
                        f"{meta.get('format')!r}, expected {FORMAT!r})")
    torch.backends.quantized.engine = ENGINE
    try:
        trunk = bool(json.loads(meta.get("trunk", "false")))
    except ValueError as exc:
        raise Int8Error(f"{path}: bad 'trunk' entry in its metadata") from exc
    parts = Int8Parts(model, observer="minmax", trunk=trunk)
    if meta.get("weights_sha256") != parts.digest:
        raise Int8Error(f"the int8 calibration {path} was made for other weights "
                        f"('{model.config.name}' has changed since): calibrate again")
    parts.set_ranges(ranges)
    return parts.convert()


def attach_int8(model: LiftingCPM, parts: Int8Parts | None) -> None:
    """Run ``model``'s convolutions with these int8 pieces (None: float32 again)."""
    model.__dict__["_int8"] = parts


__all__ = ["ENGINE", "FORMAT", "PRECISIONS", "Int8Error", "Int8Parts", "attach_int8",
           "calibration_path", "load_int8", "save_calibration", "weights_digest"]
