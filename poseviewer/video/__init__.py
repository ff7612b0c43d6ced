"""Video and camera: frame sources, people followed over time, temporal smoothing and the
per-frame pipeline (no Qt). See :mod:`poseviewer.video.pipeline`.

    from poseviewer import Estimator
    from poseviewer.video import VideoFileSource, estimate_video
    with VideoFileSource("clip.mp4") as src:
        seq = estimate_video(Estimator.default(), src, every=1, max_frames=None)
    seq[0].persons[0].track_id, seq.times[0]
"""

from __future__ import annotations

from poseviewer.video.live import LatestFrame, LiveStats, RateMeter, run_live
from poseviewer.video.pipeline import (
    DEFAULT_SMOOTHING,
    PoseSmoother,
    VideoAnalyzer,
    estimate_video,
)
from poseviewer.video.smooth import OneEuroFilter, OneEuroParams
from poseviewer.video.source import (
    VIDEO_EXTENSIONS,
    ArraySource,
    CameraSource,
    Frame,
    FrameSource,
    VideoError,
    VideoFileSource,
    is_video_path,
    iter_frames,
    open_source,
)
from poseviewer.video.track import Tracker, box_iou

__all__ = [
    "DEFAULT_SMOOTHING", "VIDEO_EXTENSIONS", "ArraySource", "CameraSource", "Frame",
    "FrameSource", "OneEuroFilter", "OneEuroParams", "Tracker", "VideoAnalyzer",
    "VideoError", "VideoFileSource", "box_iou", "estimate_video", "is_video_path",
    "iter_frames", "open_source", "PoseSmoother", "LatestFrame", "LiveStats", "RateMeter",
    "run_live",
]
