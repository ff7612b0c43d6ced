"""Convolutional pose machines: the lifting CPM (paper design), the release's networks,
preprocessing and joint reading. See ``lifting_cpm`` for the stage/fusion maths."""

from __future__ import annotations

from poseviewer.cnn.cancel import Cancelled, CancelToken, check_cancel
from poseviewer.cnn.config import (
    CPMConfig,
    FusionConfig,
    PeakConfig,
    release_personnet,
    release_posenet,
    small_cpu,
    tiny_test,
)
from poseviewer.cnn.lifting_cpm import CPMOutput, LiftingCPM, StageOutput, count_parameters
from poseviewer.cnn.weights import WeightsError, load_cpm, read_cpm_metadata, save_cpm

__all__ = [
    "CPMConfig", "CPMOutput", "CancelToken", "Cancelled", "FusionConfig", "LiftingCPM",
    "PeakConfig", "StageOutput", "WeightsError", "check_cancel", "count_parameters",
    "load_cpm", "read_cpm_metadata", "release_personnet", "release_posenet", "save_cpm",
    "small_cpu", "tiny_test",
]
