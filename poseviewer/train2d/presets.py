"""The network shipped as ``resources/models/cpm_default.safetensors``.

Chosen by timing candidates on this 2-core machine (see the model card): 128 px crops,
stride 4 (32 x 32 maps), a 9-conv trunk, 4 stages with 3 5x5 convs of width 48 each.
"""

from __future__ import annotations

from poseviewer.cnn.config import POOL, CPMConfig, FusionConfig, tiny_test
from poseviewer.skeleton import CPM14


def cpm_default(fusion: bool = True) -> CPMConfig:
    """The default 2D network's config (fusion weights per stage and map channel)."""
    return CPMConfig(
        name="cpm-default",
        input_size=128,
        trunk=(
            ("conv1_1", 3, 32), POOL,
            ("conv2_1", 3, 64), ("conv2_2", 3, 64), POOL,
            ("conv3_1", 3, 96), ("conv3_2", 3, 96), ("conv3_3", 3, 96),
            ("conv4_1", 3, 128), ("conv4_2_CPM", 3, 48),
        ),
        stage1=(("conv5_1_CPM", 1, 128), ("conv5_2_CPM", 1, 15)),
        num_stages=4, stage_kernel=5, stage_width=48, stage_depth=3, stage_hidden=48,
        num_joints=CPM14.num_joints, background=True, channel_order="RGB",
        norm_scale=1.0 / 255.0, norm_offset=-0.5,
        centre_map=True, centre_sigma=128 * 25.0 / 368, crop_pad=64,
        fusion=FusionConfig(enabled=fusion, sigma=1.0, granularity="joint", init_weight=0.5,
                            background="cnn", min_visible=5),
    ).validate()


PRESETS = {"cpm-default": cpm_default, "tiny-test": tiny_test}
