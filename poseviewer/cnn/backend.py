"""``PoseBackend``: what the Estimator needs from a 2D network, and ``CPMBackend``, the
adapter for every :class:`~poseviewer.cnn.lifting_cpm.LiftingCPM` (the release's PoseNet, the
from-scratch CPM, the pretrained-trunk network: each is a LiftingCPM with its own
``CPMConfig``).

The Estimator crops people to ``input_size`` squares (normalised as ``input_spec`` says),
calls ``forward(crops)`` and gets one :class:`StageMaps` per stage: belief maps, the joints
read from them on the map grid, and (when the network lifts and fuses per stage) the
lifting in map coordinates. ``map_to_crop`` takes map-grid (x, y, 1) to crop pixels. All
outputs are numpy: torch stays inside the backend.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from poseviewer.cnn.lifting_cpm import LiftingCPM, StageCallback
from poseviewer.cnn.ops import legacy_resize
from poseviewer.cnn.preprocess import find_person_centres, normalise, release_resize
from poseviewer.result import Fit
from poseviewer.skeleton import Skeleton, finite_visible


@dataclass(frozen=True)
class CropSpec:
    """How the Estimator makes a network's crops (``poseviewer.cnn.preprocess`` reads these
    fields): square crops of ``input_size``, the person box filling ``box_fill`` of it, pixels
    normalised as ``channel_order`` then ``x * norm_scale + norm_offset``."""

    input_size: int
    box_fill: float
    channel_order: str = "RGB"
    norm_scale: float = 1.0 / 255.0
    norm_offset: float = -0.5

    @staticmethod
    def of(config: Any) -> CropSpec:
        """The crop settings of a ``CPMConfig`` (or any object with these fields)."""
        return CropSpec(int(config.input_size), float(config.box_fill),
                        str(config.channel_order), float(config.norm_scale),
                        float(config.norm_offset))


@dataclass
class StageMaps:
    """One stage for a batch of N crops (numpy; J joints, maps h x w)."""

    cnn: np.ndarray
    """(N, J, h, w) float32: the network's belief maps (background dropped)."""
    fused: np.ndarray
    """(N, J, h, w) float32: what the stage passes on (``cnn`` without fusion)."""
    projected: np.ndarray | None
    """(N, J, h, w) float32: maps drawn at the lifted pose's projection, or None."""
    joints: np.ndarray
    """(N, J, 2) float64 (x, y) on the map grid (the reading ``joint_reading`` names)."""
    confidence: np.ndarray
    """(N, J) float64."""
    visible: np.ndarray
    """(N, J) bool: confidence above the network's visibility threshold (and the joint
    finite)."""
    fit: Fit | None = None
    """The in-network lifting of the CNN's joints (N people, map-grid coordinates), or None."""
    cnn_joints: np.ndarray | None = None
    """(N, J, 2) map grid: when fusion ran, the joints read from ``cnn`` (the ones lifted;
    ``joints`` are read from ``fused``); else None."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of 'cnn', 'lift', 'fusion' in this stage."""


@runtime_checkable
class PoseBackend(Protocol):
    """A 2D pose network as the Estimator uses it."""

    skeleton: Skeleton
    """The joint set of the maps (CPM-14 for every network here)."""
    input_size: int
    """Crops are ``input_size`` squares."""
    num_stages: int
    joint_reading: str
    """'grid' (argmax on the map grid) or 'release' (the release's reading: whole-image
    crops come from its resize, image positions are rounded)."""
    map_to_crop: np.ndarray
    """(2, 3) affine: crop_xy = map_to_crop @ (map_x, map_y, 1)."""
    input_spec: CropSpec
    """How crops are made (``poseviewer.cnn.preprocess``)."""
    lifts: bool
    """True when ``forward`` lifts (and fuses) per stage."""

    def forward(self, crops: np.ndarray, on_stage: StageCallback | None = None,
                cancel: Any = None) -> list[StageMaps]:
        """(N, S, S, 3) float32 normalised crops -> one ``StageMaps`` per stage."""
        ...

    def info(self) -> dict[str, Any]:
        """Name, settings and fusion state for ``EstimateResult.model``."""
        ...


def resolve_device(device: str | torch.device | None) -> torch.device:
    """CUDA when available (and not asked otherwise), else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """True when bfloat16 runs natively on ``device``: CUDA with bf16 support, or a CPU
    with AVX512-BF16 / AMX-BF16 (elsewhere bf16 autocast is emulated, tens of times slower
    than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return True
    flags = _cpu_flags()
    if flags is not None:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # not Linux: oneDNN's view


def _cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def _np32(x: torch.Tensor, j: int) -> np.ndarray:
    return x[:, :j].float().cpu().numpy()


class CPMBackend:
    """:class:`PoseBackend` for a :class:`LiftingCPM` (any ``CPMConfig``)."""

    def __init__(self, model: LiftingCPM, pose_model: Any = None,
                 device: str | torch.device | None = None, bf16: bool = False) -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        if pose_model is not None:
            self.model.attach_pose_model(pose_model)
        self.bf16 = bool(bf16)
        cfg = model.config
        self.skeleton = model.skeleton
        self.input_size = int(cfg.input_size)
        self.num_stages = int(cfg.num_stages)
        self.joint_reading = str(cfg.joint_reading)
        self.input_spec = CropSpec.of(cfg)
        self.visibility_threshold = float(cfg.visibility_threshold)
        s = float(cfg.stride)
        self.map_to_crop = np.array([[s, 0.0, 0.0], [0.0, s, 0.0]])
        self.map_size = -(-self.input_size // int(cfg.stride))
        """Side of the belief maps (the grid a ``prior`` is given on)."""
        self.accepts_prior = True
        """``forward`` takes ``prior`` (log-weights per crop on the map grid)."""
        self.stages: int | None = None
        """Run only the first ``stages`` stages (``LiftingCPM.forward``); None: all."""

    @property
    def config(self) -> Any:
        """The network's ``CPMConfig``."""
        return self.model.config

    @property
    def lifts(self) -> bool:
        return bool(self.model.fusion_active)

    def autocast(self) -> Any:
        """bfloat16 autocast when ``bf16`` is set, else nothing."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def forward(self, crops: np.ndarray, on_stage: StageCallback | None = None,
                cancel: Any = None, prior: np.ndarray | None = None) -> list[StageMaps]:
        """Run every stage on the batch of crops; see :class:`PoseBackend`. ``prior``:
        (N, h, w) log-weights on the map grid per crop (``poseviewer.cnn.prior``) or None."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        p = None if prior is None else torch.from_numpy(
            np.ascontiguousarray(prior, dtype=np.float32))[:, None].to(self.device)
        with torch.inference_mode(), self.autocast():
            out = self.model(x, on_stage=on_stage, cancel=cancel, prior=p,
                             stages=self.stages)
        j = self.model.config.num_joints
        stages = []
        for s in out.stages:
            conf = s.confidence.float().cpu().numpy().astype(np.float64)
            joints = s.joints.float().cpu().numpy().astype(np.float64)
            stages.append(StageMaps(
                cnn=_np32(s.cnn, j), fused=_np32(s.fused, j),
                projected=None if s.projected is None else _np32(s.projected, j),
                joints=joints, confidence=conf,
                visible=finite_visible(joints, conf > self.visibility_threshold),
                fit=None if s.lift is None else Fit.from_lift(s.lift),
                cnn_joints=None if s.lift is None or s.cnn_joints is None
                else s.cnn_joints.float().cpu().numpy().astype(np.float64),
                seconds=dict(s.seconds)))
        return stages

    def info(self) -> dict[str, Any]:
        cfg = self.model.config
        fw = self.model.fusion_weights()
        cached = getattr(self, "_config_dict", None)
        if cached is None or cached[0] is not cfg:  # to_dict of a converted trunk: ~1 ms
            cached = self._config_dict = (cfg, cfg.to_dict())
        return {  # the config dict is shared by every result of this config: read only
            "name": cfg.name,                # (a deep copy per result cost ~4 ms a frame)
            "config": cached[1],
            "fusion_active": self.model.fusion_active,
            "fusion_weights": None if fw is None else fw.detach().cpu().tolist(),
            "bf16": self.bf16,
        }


class PersonNetFinder:
    """The release's PersonNet as a people finder: person centres in a whole image."""

    def __init__(self, model: LiftingCPM, device: str | torch.device | None = None,
                 bf16: bool = False) -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.bf16 = bool(bf16)
        self.name = model.config.name

    def centres(self, rgb: np.ndarray) -> list[tuple[int, int, float, float]]:
        """(xc, yc, s, score) per person: the centre in the release's resized image (scale
        ``s`` of the original) and the map value there, in the release's order."""
        cfg = self.model.config
        resized, s = release_resize(rgb, cfg)
        x = torch.from_numpy(normalise(resized, cfg)).permute(2, 0, 1)[None]
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        cast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 \
            else nullcontext()
        with torch.inference_mode(), cast:
            out = self.model(x, read_joints=False)
        pmap = legacy_resize(out.final.cnn.float(), resized.shape[:2])[0, 0].cpu().numpy()
        return [(xc, yc, s, float(pmap[yc, xc]))
                for xc, yc in find_person_centres(pmap, cfg.peaks)]


__all__ = ["CPMBackend", "CropSpec", "PersonNetFinder", "PoseBackend", "StageMaps", "native_bf16",
           "resolve_device"]
