"""The options of ``poseviewer estimate``, parsed once from the command line into typed,
frozen dataclasses (plain values: a Ray actor gets them as they are). Nothing past
``estimate.run`` sees the ``argparse.Namespace``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poseviewer.export import EXPORTERS, parse_formats

#: ``--engine`` values: how ``process`` is mapped over the photos (commands/_engines.py).
ENGINES = ("local", "ray", "plain")
DEFAULT_BATCH = 8


class UsageError(ValueError):
    """A bad option: printed as 'poseviewer estimate: <message>', exit 2, nothing run."""


@dataclass(frozen=True)
class EstimatorSettings:
    """What :func:`load_estimator` needs (paths as given on the command line)."""

    weights: str | None = None
    pose_model: str | None = None
    device: str | None = None
    person_weights: str | None = None
    bf16: bool = False
    flip_test: bool | None = None
    """False: ``--single-pass``; None: the network's own setting."""
    target_prior_off: bool = False
    elevation_search: bool = True
    """The 3D fit searches the camera's elevation (False: ``--no-elevation-search``)."""
    fov: float | None = None
    """``--fov``: degrees, 0 = orthographic; None: the Estimator's default."""
    precision: str | None = None
    """``--precision``: 'fp32' or 'int8'; None: the Estimator's default."""
    stages: int | None = None
    """``--stages``: run the network's first K stages only; None: all."""


@dataclass(frozen=True)
class OutputOptions:
    """What to write: the folder, the formats, the 3D frame, the maps."""

    out: Path
    formats: tuple[str, ...] = ("json",)
    frame: str = "pelvis"
    save_maps: bool = False

    @property
    def per_image(self) -> tuple[str, ...]:
        """The formats written per input (all but the collected COCO file)."""
        return tuple(f for f in self.formats if not EXPORTERS[f].collect)

    @property
    def coco(self) -> bool:
        """Whether ``keypoints_coco.json`` is written."""
        return "coco" in self.formats


@dataclass(frozen=True)
class EngineOptions:
    """How the photos are mapped through ``process`` (``--engine`` and its options)."""

    name: str = "local"
    batch_size: int = DEFAULT_BATCH
    workers: int = 1
    threads: int | None = None
    ray_address: str | None = None
    num_gpus: int = 0
    actors: int | None = None


@dataclass(frozen=True)
class VideoOptions:
    """The video options (``--every`` ... ``--stage-fits``)."""

    every: int = 1
    max_frames: int | None = None
    smoothing: bool = True
    min_track_frames: int = 1
    keep_maps: bool = False
    detect_every: int = 1
    mirror_pass: bool = False
    stage_fits: bool = False


@dataclass(frozen=True)
class EstimateOptions:
    """Every option of ``poseviewer estimate``, checked."""

    paths: tuple[Path, ...]
    output: OutputOptions
    estimator: EstimatorSettings
    engine: EngineOptions
    video: VideoOptions
    resume: bool = False
    progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EstimateOptions:
        """Parse and check the command line's options; a bad one raises
        :class:`UsageError` with the message to print."""
        try:
            formats = parse_formats(args.format)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        from poseviewer.video.pipeline import (
            DEFAULT_DETECT_EVERY,
            REALTIME_DETECT_EVERY,
            REALTIME_STAGES,
        )

        realtime = bool(getattr(args, "realtime", False))
        if realtime and args.mirror_pass:
            raise UsageError("--realtime runs a single pass: leave out --mirror-pass")
        detect_every = args.detect_every if args.detect_every is not None else \
            REALTIME_DETECT_EVERY if realtime else DEFAULT_DETECT_EVERY
        stages = getattr(args, "stages", None)
        if stages is None and realtime:
            stages = REALTIME_STAGES
        video = VideoOptions(
            every=int(args.every), max_frames=args.max_frames,
            smoothing=not args.no_smoothing, min_track_frames=int(args.min_track_frames),
            keep_maps=bool(args.keep_maps), detect_every=int(detect_every),
            mirror_pass=bool(args.mirror_pass), stage_fits=bool(args.stage_fits))
        problem = _video_problem(video)
        if problem:
            raise UsageError(problem)
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if stages is not None and stages < 1:
            raise UsageError(f"--stages must be at least 1, not {stages}")
        return cls(
            paths=tuple(Path(p) for p in args.paths),
            output=OutputOptions(out=Path(args.out), formats=tuple(formats), frame=args.frame,
                                 save_maps=bool(args.save_maps)),
            estimator=EstimatorSettings(
                weights=_str(args.weights), pose_model=_str(args.pose_model),
                device=args.device, person_weights=_str(args.person_weights),
                bf16=bool(args.bf16), flip_test=False if args.single_pass else None,
                target_prior_off=bool(args.no_target_prior),
                elevation_search=bool(args.elevation_search), fov=args.fov,
                precision=args.precision, stages=stages),
            engine=EngineOptions(
                name=args.engine, batch_size=int(args.batch_size), workers=int(args.workers),
                threads=args.threads, ray_address=args.ray_address,
                num_gpus=int(args.num_gpus), actors=args.actors),
            video=video, resume=bool(args.resume), progress=not args.no_progress)


def _str(p: Any) -> str | None:
    return None if p is None else str(p)


def _video_problem(v: VideoOptions) -> str | None:
    """A usage problem with the video options, or None."""
    if v.every < 1:
        return f"--every must be at least 1, not {v.every}"
    if v.max_frames is not None and v.max_frames < 1:
        return f"--max-frames must be at least 1, not {v.max_frames}"
    if v.detect_every < 1:
        return f"--detect-every must be at least 1, not {v.detect_every}"
    if v.min_track_frames < 1:
        return f"--min-track-frames must be at least 1, not {v.min_track_frames}"
    return None


def load_estimator(settings: EstimatorSettings) -> Any:
    """The Estimator for ``settings``."""
    from poseviewer.cnn.prior import TargetPrior
    from poseviewer.estimator import Estimator

    s = settings
    return Estimator.load(weights=s.weights, pose_model=s.pose_model, device=s.device,
                          person_weights=s.person_weights, bf16=s.bf16,
                          flip_test=s.flip_test,
                          target_prior=TargetPrior(0.0, 0.0) if s.target_prior_off else None,
                          elevation_search=s.elevation_search, fov=s.fov,
                          precision=s.precision, stages=s.stages)
