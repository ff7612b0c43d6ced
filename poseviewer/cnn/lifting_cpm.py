"""The lifting CPM: a multi-stage convolutional pose machine whose stages lift their 2D
joints to 3D, project the 3D pose back as Gaussian belief maps and fuse them with the CNN's
maps (Tomé et al., "Lifting from the Deep", CVPR 2017).

Per stage t (``forward``):

1. ``b_t``: the CNN's maps (B, C, h, w), C = joints + background.
2. Joints: integer argmax of each joint map of ``b_t`` (no gradient), xy on the map grid
   (map pixel (i, j) = (x=j, y=i); crop pixel p = map coordinate p * stride); confidence =
   max over columns of the mean over rows (the release's formula) on the map grid;
   visible = confidence > ``visibility_threshold``. With ``joint_reading='release'`` the
   release's reading instead (maps legacy-resized to the crop, integer argmax there, the
   same confidence formula on the resized maps), divided by the stride: map units, 1/stride
   resolution. So the joints the Estimator reports, their visibility and the in-network
   lift (fit, projected maps) all come from one reading.
3. If fusion is on and a 3D model is attached: lift all people at once (the lifting is
   invariant to 2D translation and scale, so joints are lifted in map coordinates), take
   the best component's projection (H36M-17 -> CPM-14) and draw Gaussian maps ``bhat_t``
   (sigma ``fusion.sigma`` map pixels, peak 1). Background channel of ``bhat_t``: the CNN's
   own (``fusion.background='cnn'``, default: the fused background equals the CNN's) or
   1 - max over projected joints ('recompute').
4. ``f_t = w_t * b_t + (1 - w_t) * bhat_t``, ``w_t = sigmoid(fusion_logit[t])`` (shape 1
   or C per stage: ``fusion.granularity``). People with < ``fusion.min_visible`` visible
   joints are not lifted and pass ``f_t = b_t``. ``f_t`` feeds stage t + 1.

5. The joints the stage reports are read from its output maps ``f_t`` (the paper's
   definition; ``report_joints='fused'``, the default); the CNN's own joints (read from
   ``b_t``, the ones that were lifted) are kept in ``cnn_joints``. Without fusion both are
   the same.

Trunk: conv + max-pool layers (``CPMConfig.trunk``) or a converted pretrained graph
(``CPMConfig.graph_trunk``, :class:`poseviewer.cnn.graph_trunk.GraphTrunk`). Maps: the stage
convs output the maps themselves (``map_activation='linear'``) or one logit map per joint
(``'softmax'``: ``b = exp(z - max z)``, background ``1 - max_j b_j``; with
``stage_residual`` stages 2..T add their output to ``log f_{t-1}``), read with
``joint_reading='softmax'`` (sub-grid peak, confidence = mass around the peak).

The argmax/lift path is a constant for autograd: gradients reach the network through
``b_t`` and the fusion weights through ``w_t``. With fusion off (or no 3D model attached)
the network is the plain CPM (the release's behaviour: ``f_t = b_t``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poseviewer.cnn.cancel import check_cancel
from poseviewer.cnn.config import CPMConfig
from poseviewer.cnn.ops import (
    avg_pool_same,
    centre_map,
    gaussian_maps,
    logit,
    read_joints_grid,
    read_joints_release,
    read_joints_softmax,
)
from poseviewer.skeleton import CPM14, Skeleton, h36m_to_cpm

#: on_stage(stage_index, num_stages): called once per stage for the whole batch (every
#: person at once); the network, its backend and the Estimator all take this one type.
StageCallback = Callable[[int, int], None]


@dataclass
class StageOutput:
    """One stage for the whole batch (tensors on the network's device)."""

    cnn: Tensor
    """(B, C, h, w) the CNN's maps b_t (with gradient)."""
    fused: Tensor
    """(B, C, h, w) f_t, the stage's output (is ``cnn`` when fusion did not run)."""
    projected: Tensor | None = None
    """(B, C, h, w) bhat_t (constant), zeros for people not lifted; None without fusion."""
    joints: Tensor | None = None
    """(B, J, 2) float xy on the map grid: argmax of b_t's joint maps ('grid' reading) or
    the release reading / stride ('release')."""
    confidence: Tensor | None = None
    """(B, J) column-mean confidence of b_t's joint maps (of the resized maps: 'release')."""
    visible: Tensor | None = None
    """(B, J) bool, confidence > visibility_threshold."""
    cnn_joints: Tensor | None = None
    """(B, J, 2) joints read from b_t (the ones lifted); ``joints`` when not fused."""
    cnn_confidence: Tensor | None = None
    """(B, J) confidence read from b_t."""
    logits: Tensor | None = None
    """(B, J, h, w) the joint logits z (``map_activation='softmax'`` only, with gradient)."""
    lift: Any = None
    """The ``LiftResult`` (N = B, map-grid coordinates) or None."""
    lifted: Tensor | None = None
    """(B,) bool: people whose projected maps were fused."""
    weight: Tensor | None = None
    """(1 or C,) fusion weight w_t used (None without fusion)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of 'cnn', 'lift' and 'fusion' for this stage."""


@dataclass
class CPMOutput:
    """All stages."""

    stages: list[StageOutput]

    @property
    def final(self) -> StageOutput:
        """The last stage."""
        return self.stages[-1]


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=1, padding=k // 2)


class LiftingCPM(nn.Module):
    """A CPM described by a :class:`CPMConfig`, with optional per-stage lifting and fusion.

    Parameters are ``layers.<release layer name>.weight/bias`` (OIHW) and, when fusion is
    enabled in the config, ``fusion_logit`` (num_stages, 1 or C).
    """

    skeleton: Skeleton = CPM14
    """The joint set of its maps (names, flip pairs; ``PoseBackend.skeleton`` reads it)."""

    def __init__(self, config: CPMConfig, pose_model: Any = None) -> None:
        super().__init__()
        self.config = config.validate()
        cfg = self.config
        self.layers = nn.ModuleDict()
        convs = cfg.conv_layers()
        for name, k, cin, cout, _ in convs:
            self.layers[name] = _conv(cin, cout, k)
        self._trunk: list[str] = [s[0] for s in cfg.trunk]  # conv names and "pool"
        self._stage1: list[str] = [c[0] for c in convs if c[4] == 1]
        self._stages: list[list[str]] = [
            [c[0] for c in convs if c[4] == t] for t in range(2, cfg.num_stages + 1)]
        if cfg.fusion.enabled:
            width = 1 if cfg.fusion.granularity == "stage" else cfg.num_maps
            init = logit(cfg.fusion.init_weight)
            self.fusion_logit = nn.Parameter(torch.full((cfg.num_stages, width), init))
        else:
            self.fusion_logit = None
        self.graph = None
        if cfg.graph_trunk is not None:
            from poseviewer.cnn.graph_trunk import GraphTrunk

            self.graph = GraphTrunk(cfg.graph_trunk)
        self._pose_model: Any = None
        if pose_model is not None:
            self.attach_pose_model(pose_model)

    # ---- 3D model ----------------------------------------------------------------------------
    def attach_pose_model(self, pose_model: Any) -> None:
        """Use this ``PoseModel3D`` for the per-stage lifting (kept out of the state dict);
        any object whose ``lift(joints, visible, as_numpy=True)`` returns ``lifted`` and
        ``joints_2d`` (numpy or torch) will do."""
        self.__dict__["_pose_model"] = pose_model

    @property
    def pose_model(self) -> Any:
        """The attached 3D model or None."""
        return self.__dict__.get("_pose_model")

    @property
    def int8(self) -> Any:
        """The int8 convolutions in use (``poseviewer.cnn.int8.attach_int8``) or None."""
        return self.__dict__.get("_int8")

    @property
    def fusion_active(self) -> bool:
        """True when forward lifts and fuses (fusion enabled and a 3D model attached)."""
        return self.config.fusion.enabled and self.pose_model is not None

    def fusion_weights(self) -> Tensor | None:
        """(num_stages, 1 or C) w_t = sigmoid(fusion_logit), or None."""
        return None if self.fusion_logit is None else torch.sigmoid(self.fusion_logit)

    # ---- pieces ------------------------------------------------------------------------------
    def pooled_centre(self, batch: int, size: int, like: Tensor) -> Tensor:
        """(B, 1, h, w) the default centre map (peak at the crop centre), SAME-avg-pooled."""
        c = centre_map(size, self.config.centre_sigma, dtype=like.dtype, device=like.device)
        return self.pool_centre(c).expand(batch, -1, -1, -1)

    def pool_centre(self, centre: Tensor) -> Tensor:
        """SAME average pooling of a centre map to the map grid (kernel stride + 1)."""
        s = self.config.stride
        return avg_pool_same(centre, s + 1, s)

    def trunk(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, F, h, w) features."""
        if self.int8 is not None and self.int8.quantises_trunk:
            return self.int8.run_trunk(images)
        if self.graph is not None:
            return self.graph(images)
        x = images
        for name in self._trunk:
            x = F.max_pool2d(x, 2, 2) if name == "pool" else F.relu(self.layers[name](x))
        return x

    def _head(self, names: list[str], x: Tensor) -> Tensor:
        if self.int8 is not None:
            return self.int8.run_head(names[0], x)
        for i, name in enumerate(names):
            x = self.layers[name](x)
            if i < len(names) - 1:
                x = F.relu(x)
        return x

    def _activate(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """Stage conv output -> (belief maps b, joint logits or None)."""
        if self.config.map_activation != "softmax":
            return z, None
        b = torch.exp(z - z.amax(dim=(-2, -1), keepdim=True))
        bg = 1.0 - b.detach().amax(dim=1, keepdim=True)
        return torch.cat([b, bg], dim=1), z

    def judge_visible(self, joints: Tensor, confidence: Tensor) -> Tensor:
        """Visible: confidence above the threshold and both coordinates finite (a NaN or
        infinite joint, e.g. from broken maps, is never visible nor lifted)."""
        return (confidence > self.config.visibility_threshold) & torch.isfinite(joints).all(-1)

    def read(self, maps: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """Joints (B, J, 2) in map units and confidence (B, J) from maps (B, C, h, w), by
        the config's ``joint_reading``; ``size`` is the crop side (release reading)."""
        cfg = self.config
        jmaps = maps[:, : cfg.num_joints].detach()
        if cfg.joint_reading == "release":
            xy, conf = read_joints_release(jmaps.float(), size)
            return xy.float() / cfg.stride, conf
        if cfg.joint_reading == "softmax":
            return read_joints_softmax(jmaps)
        return read_joints_grid(jmaps)

    def _fuse(self, t: int, b: Tensor, out: StageOutput) -> Tensor:
        """Lift, draw bhat_t and fuse (fills ``out``); returns f_t."""
        cfg = self.config
        J = cfg.num_joints
        model = self.pose_model
        t0 = time.perf_counter()
        with torch.no_grad():
            # the lifting is numpy on the CPU: it takes these at its boundary
            joints = out.joints.detach().to(device="cpu", dtype=torch.float64)
            visible = out.visible.detach().cpu()
            fit = model.lift(joints, visible, as_numpy=True)
            lifted = torch.as_tensor(fit.lifted, device=b.device).bool() & (
                visible.sum(-1).to(b.device) >= cfg.fusion.min_visible)
            # maps are drawn in float32 even under bf16 autocast (positions stay exact)
            proj17 = torch.as_tensor(fit.joints_2d).to(device=b.device, dtype=torch.float32)
            proj = h36m_to_cpm(proj17)  # (N, 14, 2)
        t1 = time.perf_counter()
        with torch.no_grad():
            bhat = gaussian_maps(proj, b.shape[-2], b.shape[-1], cfg.fusion.sigma)
            if cfg.fusion.background == "cnn":
                bg = b[:, J:].detach()
            else:
                bg = 1.0 - bhat.amax(dim=1, keepdim=True)
            bhat = torch.cat([bhat, bg.to(bhat.dtype)], dim=1).to(b.dtype)
            mask = lifted[:, None, None, None]
        w = torch.sigmoid(self.fusion_logit[t]).to(b.dtype)[None, :, None, None]
        fused = torch.where(mask, w * b + (1.0 - w) * bhat, b)
        out.projected = torch.where(mask, bhat, torch.zeros_like(bhat))
        out.lift = fit
        out.lifted = lifted
        out.weight = w.detach().flatten()
        out.seconds["lift"] = t1 - t0
        out.seconds["fusion"] = time.perf_counter() - t1
        return fused

    def _apply_prior(self, z: Tensor, prior: Tensor, first: bool) -> Tensor:
        """Stage output ``z`` with the log-prior (B, 1, h, w) applied (see ``forward``)."""
        cfg = self.config
        p = prior.to(device=z.device, dtype=z.dtype)
        if p.shape[0] != z.shape[0] or p.shape[-2:] != z.shape[-2:]:
            raise ValueError(f"prior {tuple(p.shape)} does not match the maps "
                             f"{tuple(z.shape)}")
        if cfg.map_activation == "softmax":
            return z + p if first or not cfg.stage_residual else z
        J = cfg.num_joints
        return torch.cat([z[:, :J] * p.exp(), z[:, J:]], dim=1)

    def set_flip_test(self, on: bool) -> None:
        """Turn the mirror test-time pass (``CPMConfig.flip_test``) on or off: the config
        is replaced (and validated: it needs softmax maps to turn on)."""
        self.config = replace(self.config, flip_test=bool(on)).validate()

    def mirror_maps(self, maps: Tensor, size: int) -> Tensor:
        """Maps (B, C, h, w) of a crop -> the same maps in the frame of the horizontally
        mirrored crop (its own inverse): joint channels swap left and right, columns
        reverse, and a sub-pixel shift keeps crop pixel x at map x / stride in both frames
        (crop x -> size - 1 - x, map m -> (size - 1) / stride - m; a plain column reversal
        gives w - 1 - m). Linear interpolation along x, edge columns repeated."""
        chans = self._mirror_channels(maps.shape[1], maps.device)
        m = maps.index_select(1, chans).flip(-1)
        return shift_x(m, (size - 1) / self.config.stride - (maps.shape[-1] - 1))

    def _mirror_channels(self, channels: int, device: torch.device) -> Tensor:
        """Channel order of mirrored maps (joints left/right swapped, others kept), made
        once per channel count and device."""
        cache = self.__dict__.setdefault("_mirror_cache", {})
        key = (channels, str(device))
        if key not in cache:
            perm = _flip_perm(self.skeleton, self.config.num_joints)
            cache[key] = torch.as_tensor(
                perm + list(range(len(perm), channels)), device=device)
        return cache[key]

    # ---- forward -----------------------------------------------------------------------------
    def forward(
        self,
        images: Tensor,
        centre: Tensor | None = None,
        *,
        on_stage: StageCallback | None = None,
        cancel: Any = None,
        read_joints: bool = True,
        prior: Tensor | None = None,
        stages: int | None = None,
    ) -> CPMOutput:
        """Run the stages (all, or the first ``stages``: the later stages' heads, fusion and
        lifting are not computed; the first ``stages`` outputs equal those of a full run).

        images: (B, 3, H, W) normalised (``channel_order``, ``norm_scale/offset``).
        centre: (B, 1, H, W) centre maps at input resolution, or None for the default map
        peaking at the crop centre (ignored when the config has no centre map).
        on_stage(stage_index, stages run) is called after each stage; ``cancel`` (a token
        with ``cancelled`` or a callable) is checked before each stage and raises
        ``Cancelled``. ``read_joints=False`` skips joint reading when fusion is inactive.
        prior: (B, 1, h, w) log-weights on the map grid for every joint map
        (``poseviewer.cnn.prior``: whom to look at), or None. It enters each stage's maps
        once: added to the logits of stage 1 and of every stage that does not build on the
        previous stage's log maps (``stage_residual``); for linear maps the joint maps are
        multiplied by its exp at every stage.
        """
        cfg = self.config
        n_stages = check_stages(stages, cfg.num_stages)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"LiftingCPM expects (B, 3, H, W) images, got {tuple(images.shape)}")
        B = images.shape[0]
        flip = cfg.flip_test and not self.training
        fuse = self.fusion_active
        size = images.shape[-1]
        if cfg.joint_reading == "release" and (fuse or read_joints) and images.shape[-2] != size:
            raise ValueError("joint_reading='release' needs square crops, got "
                             f"{tuple(images.shape[-2:])}")
        check_cancel(cancel)
        t0 = time.perf_counter()
        feat = self.trunk(torch.cat([images, images.flip(-1)]) if flip else images)
        pooled = None
        if cfg.centre_map:
            if centre is None:
                if images.shape[-1] != images.shape[-2]:
                    raise ValueError("the default centre map needs square crops")
                pooled = self.pooled_centre(feat.shape[0], images.shape[-1], feat)
            else:
                pooled = self.pool_centre(centre.to(feat.dtype))
                if flip:
                    pooled = torch.cat([pooled, pooled.flip(-1)])
            if pooled.shape[-2:] != feat.shape[-2:]:
                raise ValueError(f"pooled centre map {tuple(pooled.shape[-2:])} does not match "
                                 f"the feature grid {tuple(feat.shape[-2:])}")
            pooled = pooled.contiguous(memory_format=torch.channels_last) \
                if feat.is_contiguous(memory_format=torch.channels_last) else pooled
        stages: list[StageOutput] = []
        prev: Tensor | None = None
        for t in range(n_stages):
            if t > 0:
                check_cancel(cancel)
                t0 = time.perf_counter()
            if t == 0:
                z = self._head(self._stage1, feat)
            else:
                if flip:
                    prev = torch.cat([prev, self.mirror_maps(prev, size)])
                parts = [prev, feat] + ([pooled] if pooled is not None else [])
                z = self._head(self._stages[t - 1], torch.cat(parts, dim=1))
                if cfg.stage_residual:
                    z = z + prev[:, : cfg.num_joints].clamp_min(1e-6).log()
            if flip:
                z = 0.5 * (z[:B] + self.mirror_maps(z[B:], size))
            if prior is not None:
                z = self._apply_prior(z, prior, first=t == 0)
            b, logits = self._activate(z)
            out = StageOutput(cnn=b, fused=b, logits=logits)
            out.seconds["cnn"] = time.perf_counter() - t0
            if fuse or read_joints:
                with torch.no_grad():
                    out.joints, out.confidence = self.read(b, size)
                    out.visible = self.judge_visible(out.joints, out.confidence)
                    out.cnn_joints, out.cnn_confidence = out.joints, out.confidence
            if fuse:
                out.fused = self._fuse(t, b, out)
                if cfg.report_joints == "fused":
                    with torch.no_grad():
                        out.joints, out.confidence = self.read(out.fused, size)
                        out.visible = self.judge_visible(out.joints, out.confidence)
            stages.append(out)
            prev = out.fused
            if on_stage is not None:
                on_stage(t, n_stages)
        return CPMOutput(stages=stages)


def check_stages(stages: int | None, num_stages: int) -> int:
    """How many stages to run: ``stages`` checked against the network's ``num_stages``
    (None: all of them)."""
    if stages is None:
        return int(num_stages)
    if isinstance(stages, bool) or int(stages) != stages or not 1 <= stages <= num_stages:
        raise ValueError(f"stages must be a whole number from 1 to {num_stages} (the "
                         f"network's stages), not {stages!r}")
    return int(stages)


def _flip_perm(skeleton: Skeleton, num_joints: int) -> list[int]:
    """Left/right swap of the joint channels (``skeleton``'s mirror pairs)."""
    if num_joints != skeleton.num_joints:
        raise ValueError(f"flip_test needs the {skeleton.num_joints} joints of "
                         f"{skeleton.name}, got {num_joints}")
    return [int(i) for i in skeleton.flip_permutation()]


def shift_x(maps: Tensor, d: float) -> Tensor:
    """Maps moved by ``d`` columns (out[..., i] = maps at column i - d), linear
    interpolation, edge columns repeated."""
    w = maps.shape[-1]
    k = math.floor(d)
    f = d - k
    pad = abs(k) + 1
    padded = torch.cat([maps[..., :1].expand(*maps.shape[:-1], pad), maps,
                        maps[..., -1:].expand(*maps.shape[:-1], pad)], dim=-1)
    a = padded[..., pad - k: pad - k + w]
    if f == 0:
        return a
    b = padded[..., pad - k - 1: pad - k - 1 + w]
    return (1 - f) * a + f * b


def count_parameters(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())
