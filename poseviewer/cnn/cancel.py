"""Cooperative cancellation between CNN stages (the classes live in ``poseviewer.errors``)."""

from __future__ import annotations

from poseviewer.errors import Cancelled, CancelToken, check_cancel

__all__ = ["CancelToken", "Cancelled", "check_cancel"]
