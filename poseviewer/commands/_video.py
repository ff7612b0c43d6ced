"""``poseviewer estimate`` on video files: options, one video's run with its own progress
bar, its exports (frame axis, person ids, one BVH per id) streamed as the frames come
(:func:`poseviewer.video.pipeline.export_video`: bounded memory, a partial folder while it
runs, ``--resume`` continues an interrupted run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from poseviewer.video.pipeline import DEFAULT_DETECT_EVERY, DEFAULT_MIN_TRACK_FRAMES


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """``--every``, ``--max-frames``, ``--no-smoothing``, ``--min-track-frames``,
    ``--keep-maps``, ``--stage-fits`` (videos only)."""
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
    parser.add_argument("--detect-every", type=int, default=DEFAULT_DETECT_EVERY, metavar="K",
                        help="videos: run the people detector every K-th frame and follow "
                        "the tracked people with their previous box in between (at once "
                        "when a track is lost; default "
                        f"{DEFAULT_DETECT_EVERY}; 1: the detector on every frame)")
    parser.add_argument("--mirror-pass", action="store_true",
                        help="videos: keep the network's mirror test-time pass (default for "
                        "videos: a single pass, about twice as fast; PCK on 400 validation "
                        "photos 69.4 instead of 70.8)")
    parser.add_argument("--stage-fits", action="store_true",
                        help="videos: export every stage's 3D fit (default: the last "
                        "stage's; earlier stages keep their 2D joints; ~2.5x larger JSON)")


def check_video_arguments(args: argparse.Namespace) -> str | None:
    """A usage problem with the video options, or None."""
    if args.every < 1:
        return f"--every must be at least 1, not {args.every}"
    if args.max_frames is not None and args.max_frames < 1:
        return f"--max-frames must be at least 1, not {args.max_frames}"
    if args.detect_every < 1:
        return f"--detect-every must be at least 1, not {args.detect_every}"
    if args.min_track_frames < 1:
        return f"--min-track-frames must be at least 1, not {args.min_track_frames}"
    return None


def estimate_video_file(estimator: Any, path: Path, stem: str, args: argparse.Namespace,
                        formats: tuple[str, ...], tqdm: Any) -> Any:
    """Estimate one video and write its exports as the frames come; returns the
    :class:`~poseviewer.video.pipeline.VideoExport` (None: skipped by ``--resume``, its
    files exist). A video that cannot be read raises ``VideoError``; each final file is
    written atomically once every frame is done; an interrupted run keeps its output in
    ``<stem>.partial`` (said on stderr) and ``--resume`` continues it."""
    from poseviewer.export.stream import final_paths, partial_dir
    from poseviewer.video import DEFAULT_SMOOTHING, VideoFileSource
    from poseviewer.video.pipeline import export_video

    out = Path(args.out)
    resume = bool(getattr(args, "resume", False))
    partial = partial_dir(out, stem)
    known = final_paths(out, stem, formats)
    if resume and not partial.exists() and known and all(p.is_file() for p in known):
        return None
    with VideoFileSource(path) as src:
        total = src.frame_count
        if total is not None:
            total = -(-total // args.every)
            if args.max_frames is not None:
                total = min(total, args.max_frames)
        bar = tqdm(total=total, unit="frame", leave=False, desc=path.name,
                   disable=True if args.no_progress else None, dynamic_ncols=True)

        def progress(done: int, n: Any, result: Any) -> None:
            bar.n = done
            bar.refresh()

        mirror = getattr(estimator, "flip_test", None)
        if mirror is not None and not args.mirror_pass:
            estimator.flip_test = False  # videos: single pass unless --mirror-pass
        try:
            res = export_video(
                estimator, src, out, stem, formats, args.frame, every=args.every,
                max_frames=args.max_frames,
                smoothing=None if args.no_smoothing else DEFAULT_SMOOTHING,
                min_track_frames=args.min_track_frames, keep_maps=args.keep_maps,
                stage_fits=args.stage_fits, detect_every=args.detect_every, resume=resume,
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
