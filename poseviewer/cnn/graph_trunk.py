"""A network trunk described by data: a JSON-serialisable op list (the *trunk spec*) run as
named torch modules.

The specs come from TF.js graph models (``poseviewer.tfjs.trunk.extract_trunk`` writes them:
MoveNet's MobileNetV2 + FPN trunk, the person detector's trunk and heads); a spec travels
inside a ``CPMConfig`` (``graph_trunk``) or a detector file, so running one needs nothing of
the TF.js reader. Ops: ``conv`` / ``dwconv`` (optional relu / relu6), ``add``, ``resize`` (an
integer factor, bilinear), ``pad``, ``depth_to_space`` (TF's DCR order), ``act``.

TensorFlow's 'SAME' padding puts the odd pixel at the right / bottom (it matters at stride
2): convolutions pad explicitly, never symmetric when TF would not.
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


def _same_pad(x: Tensor, k: int, s: int, d: int) -> Tensor:
    ih, iw = x.shape[-2:]
    eff = (k - 1) * d + 1
    ph = max((math.ceil(ih / s) - 1) * s + eff - ih, 0)
    pw = max((math.ceil(iw / s) - 1) * s + eff - iw, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class GraphTrunk(nn.Module):
    """Runs a trunk spec (``poseviewer.tfjs.trunk.extract_trunk`` writes them); parameters
    are ``<layer>.weight/bias``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleDict()
        self._plan: list[tuple[str, str, list[str], dict[str, Any]]] = []
        for op in spec["ops"]:
            if op["op"] in ("conv", "dwconv"):
                k, s, d = op["kernel"], op["stride"], op["dilation"]
                symmetric = op["padding"] == "same" and s == 1 and (k - 1) * d % 2 == 0
                conv = nn.Conv2d(op["in"], op["out"], k, stride=s, dilation=d,
                                 groups=op["groups"], bias=op["bias"],
                                 padding=(k - 1) * d // 2 if symmetric else 0)
                self.layers[op["name"]] = conv
                extra = {"explicit_pad": op["padding"] == "same" and not symmetric}
            else:
                extra = {}
            self._plan.append((op["name"], op["op"], list(op["inputs"]), {**op, **extra}))
        self.stride = int(spec["stride"])
        self.out_channels = int(spec["out_channels"])

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out_channels, H / stride, W / stride); H, W multiples of the
        largest internal stride (32 for MobileNet)."""
        return self._run(x)[self.spec["output"]]

    def forward_all(self, x: Tensor) -> list[Tensor]:
        """Every output node's tensor (``spec["outputs"]``, else the one output)."""
        values = self._run(x)
        return [values[o] for o in self.spec.get("outputs", [self.spec["output"]])]

    def _run(self, x: Tensor) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {"input": x}
        for name, kind, inputs, op in self._plan:
            a = values[inputs[0]]
            if kind in ("conv", "dwconv"):
                if op["explicit_pad"]:
                    a = _same_pad(a, op["kernel"], op["stride"], op["dilation"])
                y = self.layers[name](a)
                act = op.get("act")
                if act == "relu":
                    y = F.relu(y)
                elif act == "relu6":
                    y = F.relu6(y)
            elif kind == "add":
                y = a + values[inputs[1]]
            elif kind == "resize":
                y = F.interpolate(a, scale_factor=op["factor"], mode="bilinear",
                                  align_corners=False)
            elif kind == "pad":
                t, b, le, r = op["pads"]
                y = F.pad(a, (le, r, t, b))
            elif kind == "depth_to_space":  # TF DCR: channel (i * block + j) * C + c
                n, c, h, w = a.shape
                k = op["block"]
                y = a.reshape(n, k, k, c // (k * k), h, w).permute(0, 3, 4, 1, 5, 2) \
                    .reshape(n, c // (k * k), h * k, w * k)
            else:  # act
                y = F.relu(a) if op["act"] == "relu" else F.relu6(a)
            values[name] = y
        return values
