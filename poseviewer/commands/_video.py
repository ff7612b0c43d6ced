"""``poseviewer estimate`` on video files: options, one video's run with its own progress
bar, its exports (frame axis, person ids, one BVH per id) streamed as the frames come
(:func:`poseviewer.video.pipeline.export_video`: bounded memory, a partial folder while it
runs, ``--resume`` continues an interrupted run). Videos run in this process, whatever
the engine (``commands/_pipeline.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poseviewer.video.pipeline import (
    DEFAULT_DETECT_EVERY,
    DEFAULT_MIN_TRACK_FRAMES,
    REALTIME_DETECT_EVERY,
    REALTIME_STAGES,
)

if TYPE_CHECKING:
    from poseviewer.commands._options import EstimateOptions


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """``--every``, ``--max-frames``, ``--no-smoothing``, ``--min-track-frames``,
    ``--keep-maps``, ``--detect-every``, ``--mirror-pass``, ``--realtime``, ``--stage-fits``
    (videos only)."""
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="videos: estimate every N-th frame (default 1: all)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="M",
                        help="videos: estimate at most M frames per video")
    parser.add_argument("--no-smoothing", action="store_true",
                        help="videos: no temporal (One Euro) smoothing of the 2D joints "
                        "before lifting (on by default for videos; photos never)")
    parser.add_argument("--min-track-frames", type=int, default=DEFAULT_MIN_TRACK_FRAMES,
                        metavar="M", help="videos: leave out people whose track lasted fewer "
                        f"than M frames (default {DEFAULT_MIN_TRACK_FRAMES}; 1 keeps all)")
    parser.add_argument("--keep-maps", action="store_true",
                        help="videos: keep the belief maps (in the NPZ; default: each "
                        "frame's maps are dropped once its joints are read)")
    parser.add_argument("--detect-every", type=int, default=None, metavar="K",
                        help="videos: run the people detector every K-th frame and follow "
                        "the tracked people with their previous box in between (at once "
                        "when a track is lost; default "
                        f"{DEFAULT_DETECT_EVERY}; 1: the detector on every frame)")
    parser.add_argument("--mirror-pass", action="store_true",
                        help="videos: keep the network's mirror test-time pass (default for "
                        "videos: a single pass, about twice as fast; PCK on 400 validation "
                        "photos 69.4 instead of 70.8)")
    parser.add_argument("--realtime", action="store_true",
                        help=f"the fast video preset: --stages {REALTIME_STAGES} "
                        f"--detect-every {REALTIME_DETECT_EVERY} with a single pass (either "
                        "option given explicitly wins; photos in the same run get the "
                        "first stage too); see docs/video.md for its speed and accuracy cost")
    parser.add_argument("--stage-fits", action="store_true",
                        help="videos: export every stage's 3D fit (default: the last "
                        "stage's; earlier stages keep their 2D joints; ~2.5x larger JSON)")


def estimate_video_file(estimator: Any, path: Path, stem: str, opts: EstimateOptions,
                        tqdm: Any) -> Any:
    """Estimate one video and write its exports as the frames come; returns the
    :class:`~poseviewer.video.pipeline.VideoExport` (None: skipped by ``--resume``, its
    files exist). A video that cannot be read raises ``VideoError``; each final file is
    written atomically once every frame is done; an interrupted run keeps its output in
    ``<stem>.partial`` (said on stderr) and ``--resume`` continues it."""
    from poseviewer.export.stream import final_paths, partial_dir
    from poseviewer.video import DEFAULT_SMOOTHING, VideoFileSource
    from poseviewer.video.pipeline import export_video

    v, out, formats = opts.video, Path(opts.output.out), opts.output.formats
    partial = partial_dir(out, stem)
    known = final_paths(out, stem, formats)
    if opts.resume and not partial.exists() and known and all(p.is_file() for p in known):
        return None
    with VideoFileSource(path) as src:
        total = src.frame_count
        if total is not None:
            total = -(-total // v.every)
            if v.max_frames is not None:
                total = min(total, v.max_frames)
        bar = tqdm(total=total, unit="frame", leave=False, desc=path.name,
                   disable=None if opts.progress else True, dynamic_ncols=True)

        def progress(done: int, n: Any, result: Any) -> None:
            bar.n = done
            bar.refresh()

        mirror = getattr(estimator, "flip_test", None)
        if mirror is not None and not v.mirror_pass:
            estimator.flip_test = False  # videos: single pass unless --mirror-pass
        try:
            res = export_video(
                estimator, src, out, stem, formats, opts.output.frame, every=v.every,
                max_frames=v.max_frames,
                smoothing=DEFAULT_SMOOTHING if v.smoothing else None,
                min_track_frames=v.min_track_frames, keep_maps=v.keep_maps,
                stage_fits=v.stage_fits, detect_every=v.detect_every, resume=opts.resume,
                on_frame=progress)
        except KeyboardInterrupt:
            if partial.exists():
                tqdm.write(f"poseviewer estimate: {path.name} interrupted: what was done is "
                           f"kept in {partial}; run again with --resume to continue it",
                           file=sys.stderr)
            raise
        finally:
            bar.close()
            if mirror is not None:
                estimator.flip_test = mirror
    if res.resumed_at:
        tqdm.write(f"poseviewer estimate: {path.name}: resumed after frame {res.resumed_at}")
    for note in res.messages:
        tqdm.write(f"poseviewer estimate: {note}")
    return res
