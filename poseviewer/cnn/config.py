"""``CPMConfig``: everything that defines a convolutional pose machine, JSON-serialisable.

A config describes the trunk (convs and 2x2 max-pools), stage 1, the refinement stages
2..T, the maps (joints + background), the input (size, channel order, normalisation), the
centre map, visibility and the fusion with the 3D model. Layer names follow the release's
checkpoint variable names so the converter can map ``CPM/PoseNet/<layer>/weights`` to
``layers.<layer>.weight``.

Presets: :func:`release_posenet`, :func:`release_personnet` (the release's networks exactly)
and :func:`small_cpu` (a CPU-trainable lifting CPM; the training helper tunes it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from poseviewer.skeleton import CPM14

#: A trunk entry: ``(name, kernel, out_channels)`` for a conv + ReLU, or ``("pool", 2, 0)``.
LayerSpec = tuple[str, int, int]


@dataclass(frozen=True)
class FusionConfig:
    """How each stage's CNN maps are fused with the maps of the lifted 3D pose.

    The paper leaves the Gaussian width and the form of w_t open; the choices below are
    ours. sigma = 1 map pixel is the width of the training targets (``train-2d``'s default
    ``sigma``), so bhat_t looks like the belief maps the next stage is trained on and the
    fusion mixes like with like; a wider Gaussian would blur the fused peak and move the
    joint read from it less precisely. One w_t per stage (the default) adds only
    ``num_stages`` parameters, which cannot over-fit a small 2D set such as LSP and stays
    readable ("stage t trusts the CNN this much"); 'joint' lets the data choose per joint
    (the 3D model constrains torso joints better than wrists) at 15 parameters per stage.
    w_t starts at 0.5 (equal trust) and is learned through a sigmoid, so it stays in
    (0, 1).
    """

    enabled: bool = False
    """Run the per-stage lifting and fusion (needs a 3D model attached to the network)."""
    sigma: float = 1.0
    """Gaussian sigma of the projected pose belief maps, in map pixels."""
    granularity: str = "stage"
    """'stage': one weight w_t per stage; 'joint': one per stage and map channel."""
    init_weight: float = 0.5
    """Initial w_t = sigmoid(logit) (weight of the CNN's maps): equal trust at the start."""
    background: str = "cnn"
    """Background channel of the projected maps: 'cnn' (the CNN's own background, so the
    fused background equals the CNN's) or 'recompute' (1 - max over projected joints).
    'cnn' by default: the 3D pose says nothing about where the background is."""
    min_visible: int = 5
    """People with fewer visible joints are not lifted; their stage passes b_t unchanged
    (with few joints the scale and the yaw search of the lifting are poorly constrained)."""


@dataclass(frozen=True)
class PeakConfig:
    """PersonNet's person-centre detection (release values)."""

    scale: float = 256.0
    """Map values are multiplied by this before the tests below."""
    min_range: float = 0.3
    """Peak when (3x3 max - 3x3 min) > min_range (on scaled values)."""
    min_value: float = 0.4
    """Keep a centre when the map's own value at the centre (not the scaled v) > min_value."""
    max_people: int = 4
    """The first max_people centres in raster order."""


@dataclass(frozen=True)
class CPMConfig:
    """Everything that defines a CPM network (see module docstring)."""

    name: str = "cpm"
    input_size: int = 368
    """Square crop size (PoseNet) or the resized image height (PersonNet)."""
    trunk: tuple[LayerSpec, ...] = ()
    stage1: tuple[LayerSpec, ...] = ()
    """Stage-1 layers after the trunk; the last one outputs the maps (no ReLU)."""
    num_stages: int = 6
    stage_kernel: int = 7
    stage_width: int = 128
    stage_depth: int = 5
    """Number of stage_kernel x stage_kernel convs (Mconv1..MconvD) in stages 2..T."""
    stage_hidden: int = 128
    """Width of the 1x1 conv (Mconv{D+1}) before the output 1x1 conv (Mconv{D+2})."""
    num_joints: int = CPM14.num_joints
    background: bool = True
    """One extra map channel (the last) for the background."""
    channel_order: str = "RGB"
    norm_scale: float = 1.0 / 255.0
    norm_offset: float = -0.5
    """Input = pixel * norm_scale + norm_offset in float64, then float32 (computed as
    pixel / (1 / norm_scale) when that is an integer, as the release's pixel / 255)."""
    box_fill: float = 0.8
    """A person box's longer side covers this fraction of the crop (release: 1.0, the
    image height is scaled to input_size)."""
    joint_reading: str = "grid"
    """'grid': argmax on the map grid; 'release': legacy-resize maps to the crop, argmax
    there, image position rounded (the release's reading)."""
    centre_map: bool = True
    """Stages 2..T take a pooled centre map as their last input channel."""
    centre_sigma: float = 25.0
    """exp(-d^2 / sigma^2), in input pixels."""
    crop_pad: int = 200
    """Zero padding around the normalised image before cropping (release: 200). Crops are
    zero-filled outside the image, which equals pad-then-crop whenever the release's crop
    fits in the padded image and extends it to any centre."""
    visibility_threshold: float = 1e-3
    """A joint is visible when its confidence exceeds this ('grid' / 'release': the
    column-mean confidence; 'softmax': the map's mass around its peak)."""
    graph_trunk: dict[str, Any] | None = None
    """A trunk converted from a TF.js graph model (:mod:`poseviewer.tfjs`): its op list,
    output, stride and channels. When set, ``trunk`` must be empty."""
    map_activation: str = "linear"
    """'linear': the stage convs output the belief maps (joints + background) directly.
    'softmax': they output one logit map per joint; belief map b = exp(z - max z) (peak 1,
    a spatial softmax up to its normaliser), background = 1 - max over joints; trained with
    a spatial cross-entropy."""
    stage_residual: bool = False
    """'softmax' maps only: stages 2..T output a correction to the log of the previous
    stage's fused maps (z_t = log f_{t-1} + conv output), so a stage starts as its input
    and learns what to change (the refinement cannot start worse than the stage before)."""
    flip_test: bool = False
    """'softmax' maps only, inference only (eval mode): every stage also runs on the
    horizontally mirrored crop and averages its joint logits with the mirrored-back ones
    (left/right swapped, shifted by the sub-pixel offset between the two frames), before
    fusion. About twice the network's work for a steadier, more accurate answer."""
    report_joints: str = "fused"
    """Which maps a stage's reported joints are read from: 'fused' (the stage's output
    maps, as in the paper; equal to the CNN's when fusion is off) or 'cnn'."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    peaks: PeakConfig | None = None
    """Person-centre detection settings (PersonNet only)."""

    # ---- derived -------------------------------------------------------------------------
    @property
    def num_maps(self) -> int:
        """Output channels per stage (joints + background)."""
        return self.num_joints + (1 if self.background else 0)

    @property
    def head_channels(self) -> int:
        """Channels each stage's output conv produces (joints only with 'softmax')."""
        return self.num_joints if self.map_activation == "softmax" else self.num_maps

    @property
    def stride(self) -> int:
        """Input pixels per map pixel (2 ** number of pools, or the graph trunk's)."""
        if self.graph_trunk is not None:
            return int(self.graph_trunk["stride"])
        return 2 ** sum(1 for s in self.trunk if s[0] == "pool")

    @property
    def map_size(self) -> int:
        """Map side for a square input_size crop."""
        return -(-self.input_size // self.stride)

    @property
    def feature_channels(self) -> int:
        """Channels of the trunk's output."""
        if self.graph_trunk is not None:
            return int(self.graph_trunk["out_channels"])
        convs = [s for s in self.trunk if s[0] != "pool"]
        return convs[-1][2]

    def conv_layers(self) -> list[tuple[str, int, int, int, int]]:
        """Every conv in network order: (name, kernel, in_channels, out_channels, stage),
        stage 0 = trunk, 1 = stage 1, t = refinement stage t. Pools are not listed."""
        out = []
        cin = 3
        for name, k, cout in self.trunk:
            if name != "pool":
                out.append((name, k, cin, cout, 0))
                cin = cout
        if self.graph_trunk is not None:
            cin = self.feature_channels
        feat = cin
        for name, k, cout in self.stage1:
            out.append((name, k, cin, cout, 1))
            cin = cout
        stage_in = self.num_maps + feat + (1 if self.centre_map else 0)
        for t in range(2, self.num_stages + 1):
            cin = stage_in
            for i in range(1, self.stage_depth + 1):
                out.append((f"Mconv{i}_stage{t}", self.stage_kernel, cin, self.stage_width, t))
                cin = self.stage_width
            d = self.stage_depth
            out.append((f"Mconv{d + 1}_stage{t}", 1, cin, self.stage_hidden, t))
            out.append((f"Mconv{d + 2}_stage{t}", 1, self.stage_hidden, self.head_channels,
                        t))
        return out

    def tf_variables(self, scope: str) -> dict[str, tuple[int, ...]]:
        """TensorFlow checkpoint variable name -> shape (weights HWIO, biases (O,)), e.g.
        ``CPM/PoseNet/conv1_1/weights`` for scope ``CPM/PoseNet``."""
        out: dict[str, tuple[int, ...]] = {}
        for name, k, cin, cout, _ in self.conv_layers():
            out[f"{scope}/{name}/weights"] = (k, k, cin, cout)
            out[f"{scope}/{name}/biases"] = (cout,)
        return out

    def validate(self) -> CPMConfig:
        """Raise ValueError naming the problem if the config is inconsistent."""
        if self.graph_trunk is not None:
            if self.trunk:
                raise ValueError("CPMConfig: give either trunk layers or a graph_trunk")
            missing = {"ops", "output", "stride", "out_channels"} - set(self.graph_trunk)
            if missing:
                raise ValueError(f"CPMConfig.graph_trunk lacks {sorted(missing)}")
        elif not self.trunk or self.trunk[0][0] == "pool":
            raise ValueError("CPMConfig.trunk must start with a conv layer")
        if not self.stage1:
            raise ValueError("CPMConfig.stage1 must hold at least the output layer")
        if self.stage1[-1][2] != self.head_channels:
            raise ValueError(
                f"CPMConfig.stage1's last layer outputs {self.stage1[-1][2]} channels, "
                f"expected {self.head_channels} (num_maps = {self.num_maps}"
                f"{', joints only: softmax maps' if self.map_activation == 'softmax' else ''})")
        if self.map_activation not in ("linear", "softmax"):
            raise ValueError("CPMConfig.map_activation must be 'linear' or 'softmax'")
        if self.map_activation == "softmax" and not self.background:
            raise ValueError("map_activation='softmax' derives a background channel: "
                             "set background=True")
        if self.stage_residual and self.map_activation != "softmax":
            raise ValueError("stage_residual needs map_activation='softmax'")
        if self.flip_test and self.map_activation != "softmax":
            raise ValueError("flip_test needs map_activation='softmax'")
        if self.report_joints not in ("fused", "cnn"):
            raise ValueError("CPMConfig.report_joints must be 'fused' or 'cnn'")
        if self.num_stages < 1:
            raise ValueError("CPMConfig.num_stages must be >= 1")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"CPMConfig.channel_order must be RGB or BGR, not "
                             f"{self.channel_order!r}")
        if self.joint_reading not in ("grid", "release", "softmax"):
            raise ValueError("CPMConfig.joint_reading must be 'grid', 'release' or 'softmax'")
        if self.fusion.granularity not in ("stage", "joint"):
            raise ValueError("FusionConfig.granularity must be 'stage' or 'joint'")
        if self.fusion.background not in ("cnn", "recompute"):
            raise ValueError("FusionConfig.background must be 'cnn' or 'recompute'")
        if self.fusion.enabled and not self.background:
            raise ValueError("fusion needs a background channel (background=True)")
        names = [s[0] for s in self.trunk + self.stage1 if s[0] != "pool"]
        if len(set(names)) != len(names):
            raise ValueError("CPMConfig layer names must be unique")
        return self

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples)."""
        d = asdict(self)
        d["trunk"] = [list(s) for s in self.trunk]
        d["stage1"] = [list(s) for s in self.stage1]
        return d

    def to_json(self) -> str:
        """Compact JSON (stored in safetensors metadata under 'config')."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CPMConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CPMConfig keys: {sorted(unknown)}")
        d = dict(d)
        for key in ("trunk", "stage1"):
            if key in d:
                d[key] = tuple((str(s[0]), int(s[1]), int(s[2])) for s in d[key])
        if "fusion" in d and isinstance(d["fusion"], dict):
            d["fusion"] = FusionConfig(**d["fusion"])
        if d.get("peaks") is not None and isinstance(d["peaks"], dict):
            d["peaks"] = PeakConfig(**d["peaks"])
        return cls(**d).validate()

    @classmethod
    def from_json(cls, text: str) -> CPMConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def with_fusion(self, **kwargs: Any) -> CPMConfig:
        """A copy with some fusion settings changed."""
        return replace(self, fusion=replace(self.fusion, **kwargs)).validate()


POOL: LayerSpec = ("pool", 2, 0)


def _vgg_front() -> tuple[LayerSpec, ...]:
    return (
        ("conv1_1", 3, 64), ("conv1_2", 3, 64), POOL,
        ("conv2_1", 3, 128), ("conv2_2", 3, 128), POOL,
        ("conv3_1", 3, 256), ("conv3_2", 3, 256), ("conv3_3", 3, 256), ("conv3_4", 3, 256),
        POOL,
    )


def release_posenet() -> CPMConfig:
    """The release's PoseNet exactly (6 stages, 14 joints + background, 368 crops)."""
    return CPMConfig(
        name="release-posenet",
        input_size=368,
        trunk=_vgg_front() + (
            ("conv4_1", 3, 512), ("conv4_2", 3, 512),
            ("conv4_3_CPM", 3, 256), ("conv4_4_CPM", 3, 256), ("conv4_5_CPM", 3, 256),
            ("conv4_6_CPM", 3, 256), ("conv4_7_CPM", 3, 128),
        ),
        stage1=(("conv5_1_CPM", 1, 512), ("conv5_2_CPM", 1, 15)),
        num_stages=6, stage_kernel=7, stage_width=128, stage_depth=5, stage_hidden=128,
        num_joints=CPM14.num_joints, background=True, centre_map=True, centre_sigma=25.0,
        box_fill=1.0, joint_reading="release",
    ).validate()


def release_personnet() -> CPMConfig:
    """The release's PersonNet exactly (4 stages, 1 person-centre map, whole image)."""
    return CPMConfig(
        name="release-personnet",
        input_size=368,
        trunk=_vgg_front() + (
            ("conv4_1", 3, 512), ("conv4_2", 3, 512), ("conv4_3", 3, 512), ("conv4_4", 3, 512),
            ("conv5_1", 3, 512), ("conv5_2_CPM", 3, 128),
        ),
        stage1=(("conv6_1_CPM", 1, 512), ("conv6_2_CPM", 1, 1)),
        num_stages=4, stage_kernel=7, stage_width=128, stage_depth=5, stage_hidden=128,
        num_joints=1, background=False, centre_map=False, peaks=PeakConfig(), box_fill=1.0,
    ).validate()


def small_cpu(fusion: bool = True) -> CPMConfig:
    """A lifting CPM small enough to train on 2 CPU cores (placeholder sizes: the training
    helper tunes them). 256 crops, stride 8 (32 x 32 maps), 4 stages."""
    return CPMConfig(
        name="small-cpu",
        input_size=256,
        trunk=(
            ("conv1_1", 3, 32), POOL,
            ("conv2_1", 3, 64), POOL,
            ("conv3_1", 3, 96), ("conv3_2", 3, 96), POOL,
            ("conv4_1", 3, 128), ("conv4_2_CPM", 3, 64),
        ),
        stage1=(("conv5_1_CPM", 1, 128), ("conv5_2_CPM", 1, 15)),
        num_stages=4, stage_kernel=5, stage_width=64, stage_depth=3, stage_hidden=64,
        num_joints=CPM14.num_joints, background=True, centre_map=True,
        centre_sigma=256 * 25.0 / 368,
        crop_pad=140,
        fusion=FusionConfig(enabled=fusion, sigma=1.0, granularity="stage", init_weight=0.5),
    ).validate()


def tiny_test(fusion: bool = True, num_stages: int = 3) -> CPMConfig:
    """A very small config for unit tests (64 crops, stride 4, 16 x 16 maps)."""
    return CPMConfig(
        name="tiny-test",
        input_size=64,
        trunk=(("conv1_1", 3, 8), POOL, ("conv2_1", 3, 8), POOL, ("conv3_1", 3, 8)),
        stage1=(("conv4_1_CPM", 1, 8), ("conv4_2_CPM", 1, 15)),
        num_stages=num_stages, stage_kernel=3, stage_width=8, stage_depth=2, stage_hidden=8,
        num_joints=CPM14.num_joints, background=True, centre_map=True, centre_sigma=64 * 25.0 / 368,
        crop_pad=32,
        fusion=FusionConfig(enabled=fusion, sigma=1.0),
    ).validate()


def tf_fixture() -> CPMConfig:
    """The few-KB network of the TensorFlow checkpoint fixture (tests/fixtures/tf_ckpt)."""
    return CPMConfig(
        name="tf-fixture",
        input_size=32,
        trunk=(("conv1_1", 3, 4), POOL, ("conv2_1", 3, 4)),
        stage1=(("conv3_1_CPM", 1, 4), ("conv3_2_CPM", 1, 15)),
        num_stages=2, stage_kernel=3, stage_width=4, stage_depth=1, stage_hidden=4,
        num_joints=CPM14.num_joints, background=True, centre_map=True, centre_sigma=32 * 25.0 / 368,
        crop_pad=16,
    ).validate()


PRESETS = {
    "release-posenet": release_posenet,
    "release-personnet": release_personnet,
    "small-cpu": small_cpu,
    "tiny-test": tiny_test,
    "tf-fixture": tf_fixture,
}
