"""``poseviewer estimate`` on video files: options, one video's run with its own progress
bar, its exports (frame axis, person ids, one BVH per id)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from poseviewer.export import export_sequence


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """``--every``, ``--max-frames``, ``--no-smoothing`` (videos only)."""
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="videos: estimate every N-th frame (default 1: all)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="M",
                        help="videos: estimate at most M frames per video")
    parser.add_argument("--no-smoothing", action="store_true",
                        help="videos: no temporal (One Euro) smoothing of the 2D joints "
                        "before lifting (on by default for videos; photos never)")


def check_video_arguments(args: argparse.Namespace) -> str | None:
    """A usage problem with the video options, or None."""
    if args.every < 1:
        return f"--every must be at least 1, not {args.every}"
    if args.max_frames is not None and args.max_frames < 1:
        return f"--max-frames must be at least 1, not {args.max_frames}"
    return None


def estimate_video_file(estimator: Any, path: Path, stem: str, args: argparse.Namespace,
                        formats: tuple[str, ...], tqdm: Any) -> tuple[list[Path], Any]:
    """Estimate one video and write its exports; returns (files written, the sequence).
    A video that cannot be read raises ``VideoError``; nothing is written before every
    frame has been estimated, and each file is written atomically."""
    from poseviewer.video import DEFAULT_SMOOTHING, VideoFileSource, estimate_video

    with VideoFileSource(path) as src:
        total = src.frame_count
        if total is not None:
            total = -(-total // args.every)
            if args.max_frames is not None:
                total = min(total, args.max_frames)
        bar = tqdm(total=total, unit="frame", leave=False, desc=path.name,
                   disable=True if args.no_progress else None, dynamic_ncols=True)
        try:
            seq = estimate_video(estimator, src, every=args.every, max_frames=args.max_frames,
                                 smoothing=None if args.no_smoothing else DEFAULT_SMOOTHING,
                                 on_frame=lambda done, n, r: bar.update(1))
        finally:
            bar.close()
    seq.source = str(path)
    for note in seq.messages:
        tqdm.write(f"poseviewer estimate: {note}")
    return export_sequence(seq, args.out, stem, formats, frame=args.frame), seq
