"""TensorFlow V2 checkpoint bundles without TensorFlow: reader, CRC-32C, release converter."""

from __future__ import annotations

from poseviewer.checkpoint.bundle import CheckpointError, CheckpointReader, TensorEntry

__all__ = ["CheckpointError", "CheckpointReader", "TensorEntry"]
