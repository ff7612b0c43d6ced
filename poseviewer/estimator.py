"""``Estimator``: the one API the GUI, the CLI and scripts use to analyse an image.

    from poseviewer import Estimator
    est = Estimator.default()                      # bundled CNN + bundled 3D model
    est = Estimator.load(weights="...", pose_model="...mat or .safetensors")
    result = est.estimate("photo.jpg", boxes=None, on_stage=cb, cancel=token)

``estimate`` is a pipeline of named phases, each a method with typed input and output, each
value in one named coordinate frame:

1. ``load``    -> :class:`~poseviewer.imageio.LoadedImage` (an image above ``max_pixels`` is
   analysed as a downscaled copy: the *analysed* frame; the file is the *original* frame).
2. ``people``  -> :class:`People` in analysed pixels: user ``boxes`` (given in original
   pixels), else PersonNet (when loaded), else the person detector
   (``poseviewer.detect.find_people``), else the whole image.
3. ``crops``   -> :class:`Crops`: one ``input_size`` square per person and its
   crop -> original-image affine.
4. ``forward`` -> one :class:`~poseviewer.cnn.backend.StageMaps` per stage from the
   :class:`~poseviewer.cnn.backend.PoseBackend`, for all people at once (``on_stage(stage,
   num_stages)`` once per stage; ``cancel``, a ``CancelToken`` or a callable, stops between
   stages with ``Cancelled``).
5. ``joints``  -> per stage (P, J, 2) joints in original-image pixels (map grid ->
   ``map_to_image``).
6. ``lift``    -> per stage a :class:`~poseviewer.result.Fit` for all people, in image pixels
   (the network's own per-stage lifting mapped from the map grid, or one post-hoc lifting
   of every stage and person at once).
7. ``package`` -> the :class:`~poseviewer.result.EstimateResult` (numpy, original pixels).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.camera import DEFAULT_FOV_DEG, RayLifter, check_fov, lift_along_rays
from poseviewer.cnn.backend import (
    CPMBackend,
    PersonNetFinder,
    PoseBackend,
    StageCallback,
    StageMaps,
    native_bf16,
    resolve_device,
)
from poseviewer.cnn.cancel import Cancelled, CancelToken, check_cancel
from poseviewer.cnn.int8 import PRECISIONS, Int8Error, attach_int8, calibration_path, load_int8
from poseviewer.cnn.lifting_cpm import LiftingCPM, check_stages
from poseviewer.cnn.preprocess import crop_centred, normalise, release_resize, warp_crop
from poseviewer.cnn.prior import DEFAULT_PRIOR, TargetPrior, log_prior
from poseviewer.cnn.weights import WeightsError, load_cpm
from poseviewer.detect import find_people
from poseviewer.imageio import MAX_PIXELS, ImageError, LoadedImage, load_image
from poseviewer.lifting import ModelFileError, ModelFileNotFoundError, PoseModel3D, load_pose_model
from poseviewer.lifting.plausibility import PLAUSIBILITY_FILE, PlausibilityLimits, judge_fit
from poseviewer.paths import DEFAULT_CNN, DEFAULT_POSE_MODEL
from poseviewer.result import EstimateResult, Fit, PersonResult, StageResult
from poseviewer.skeleton import finite_visible

__all__ = ["Cancelled", "CancelToken", "Crops", "Estimator", "ImageError",
           "ModelNotFoundError", "People", "WeightsError", "DEFAULT_CNN", "DEFAULT_POSE_MODEL"]

#: image_rgb -> (boxes (N, 4) x0 y0 x1 y1, scores (N,)) or a list of (box, score)
PeopleFinder = Callable[[np.ndarray], Any]


class ModelNotFoundError(WeightsError, FileNotFoundError):
    """A default or requested model file does not exist."""


def _affine_batch(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(P, 2, 3) affines applied to (P, K, 2) points, one affine per person."""
    xy = np.asarray(xy, dtype=np.float64)
    return np.einsum("pij,pkj->pki", m[:, :, :2], xy) + m[:, None, :, 2]


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(P, 2, 3) o (2, 3): apply ``inner`` first."""
    lin = outer[:, :, :2] @ inner[:, :2]
    return np.concatenate([lin, (outer[:, :, :2] @ inner[:, 2])[..., None] + outer[:, :, 2:]],
                          axis=-1)


def _boxes_scores(found: Any) -> tuple[np.ndarray, np.ndarray]:
    """A people finder's answer, ``(boxes, scores)`` or a list of ``(box, score)``."""
    if isinstance(found, tuple) and len(found) == 2 and np.ndim(found[0]) == 2:
        boxes, scores = found
    else:
        pairs = list(found or [])
        boxes = [b for b, _ in pairs]
        scores = [s for _, s in pairs]
    return (np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(scores, dtype=np.float64).reshape(-1))


@dataclass
class People:
    """The people to analyse, in analysed-image pixels."""

    boxes: np.ndarray
    """(P, 4) x0, y0, x1, y1."""
    centres: np.ndarray
    """(P, 2) x, y."""
    sources: list[str]
    """'user', 'detector' or 'whole-image' per person."""
    scores: np.ndarray
    """(P,) detection scores (1 for user boxes and the whole image)."""
    release_centres: list[tuple[int, int, float] | None]
    """Per person: (xc, yc, scale) of the release's resize-pad-crop, or None (warped crop)."""
    given: np.ndarray | None = None
    """(P, 4) user boxes as given (original pixels), or None."""
    messages: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    @staticmethod
    def make(boxes: Any, scores: Any, source: str, release: Any = None) -> People:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return People(b, (b[:, :2] + b[:, 2:]) / 2, [source] * len(b),
                      np.asarray(scores, dtype=np.float64).reshape(-1),
                      list(release) if release is not None else [None] * len(b))


@dataclass
class Crops:
    """Crops and where they came from."""

    images: np.ndarray
    """(P, S, S, 3) float32 normalised crops."""
    to_image: np.ndarray
    """(P, 2, 3) crop pixels -> original-image pixels."""
    prior: np.ndarray | None = None
    """(P, h, w) log-weights on each crop's map grid (whom to look at), or None."""
    image_size: tuple[int, int] | None = None
    """(width, height) of the original image (its pixels are ``to_image``'s)."""


@dataclass
class _Job:
    """One image between the phases before and after ``forward``."""

    loaded: LoadedImage
    people: People
    crops: Crops | None
    result: EstimateResult
    timings: dict[str, float]
    seconds: float
    """Wall time of the phases so far."""


def _slice_stage(s: StageMaps, a: int, b: int) -> StageMaps:
    """Crops ``a:b`` of a batch's stage (its times: their share of the batch's)."""
    share = (b - a) / max(len(s.cnn), 1)
    return StageMaps(cnn=s.cnn[a:b], fused=s.fused[a:b],
                     projected=None if s.projected is None else s.projected[a:b],
                     joints=s.joints[a:b], confidence=s.confidence[a:b],
                     visible=s.visible[a:b],
                     fit=None if s.fit is None else s.fit.select(slice(a, b)),
                     cnn_joints=None if s.cnn_joints is None else s.cnn_joints[a:b],
                     seconds={k: v * share for k, v in s.seconds.items()})


def _concat_stages(parts: list[StageMaps]) -> StageMaps:
    """One stage of several batches, stacked in order (times added)."""

    def cat(name: str) -> Any:
        vals = [getattr(p, name) for p in parts]
        return None if vals[0] is None else np.concatenate(vals)

    fits = [p.fit for p in parts]
    secs: dict[str, float] = {}
    for p in parts:
        for k, v in p.seconds.items():
            secs[k] = secs.get(k, 0.0) + v
    return StageMaps(cnn=cat("cnn"), fused=cat("fused"), projected=cat("projected"),
                     joints=cat("joints"), confidence=cat("confidence"),
                     visible=cat("visible"),
                     fit=None if fits[0] is None else Fit.concat(fits),
                     cnn_joints=cat("cnn_joints"), seconds=secs)


class Estimator:
    """Finds people, runs the 2D network (+ per-stage lifting and fusion) and fills an
    ``EstimateResult``. See the module docstring."""

    def __init__(self, model: LiftingCPM | PoseBackend, pose_model: PoseModel3D | None = None,
                 person_model: LiftingCPM | None = None, device: Any = None,
                 bf16: bool = False, max_pixels: int = MAX_PIXELS,
                 info: dict[str, Any] | None = None,
                 detector: PeopleFinder | None = find_people,
                 flip_test: bool | None = None,
                 target_prior: TargetPrior | None = None,
                 elevation_search: bool = True,
                 fov: float | None = None, precision: str | None = None,
                 stages: int | None = None) -> None:
        self.device = resolve_device(device)
        self.pose_model = pose_model
        self.fov = DEFAULT_FOV_DEG if fov is None else fov
        if isinstance(model, LiftingCPM):
            self.backend: PoseBackend = CPMBackend(model, pose_model, self.device)
        else:
            self.backend = model
        self.person_finder = None
        if person_model is not None:
            if person_model.config.peaks is None:
                raise WeightsError("the person network's config has no peak settings "
                                   "(expected a PersonNet)")
            self.person_finder = PersonNetFinder(person_model, self.device)
        self.detector = detector
        self.notes: list[str] = []
        """Notes about the set-up (e.g. bf16 not available), added to every result."""
        self.bf16 = bf16
        if flip_test is not None:
            self.flip_test = flip_test
        if self.elevation_search != bool(elevation_search):  # (a model's own grid kept)
            self.elevation_search = elevation_search
        self.max_pixels = int(max_pixels)
        self.info = dict(info or {})
        self._int8: Any = None
        if precision is not None:
            self.precision = precision
        if stages is not None:
            self.stages = stages
        self.plausibility: PlausibilityLimits | None = (
            PlausibilityLimits.load() if PLAUSIBILITY_FILE.is_file() else None)
        """The limits that judge every fit (``Fit.plausible``); None: not judged."""
        self.target_prior = DEFAULT_PRIOR if target_prior is None else target_prior
        """Whom each crop is about (``poseviewer.cnn.prior``): the target's box and the
        other people's boxes weight the belief maps; ``TargetPrior(0, 0)`` turns it off.
        Used when the backend takes a prior (``accepts_prior``)."""

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def load(cls, weights: str | os.PathLike[str] | None = None,
             pose_model: str | os.PathLike[str] | PoseModel3D | None = None,
             device: Any = None, person_weights: str | os.PathLike[str] | None = None,
             **kwargs: Any) -> Estimator:
        """Load CNN weights (default: the bundled ``cpm_default.safetensors``), a 3D model
        (a path, a ``PoseModel3D`` or None for the bundled ``pose3d_default``) and optionally
        PersonNet weights. Missing files raise ``ModelNotFoundError``; unreadable ones
        ``WeightsError``."""
        w = Path(weights) if weights is not None else DEFAULT_CNN
        if not w.is_file():
            what = "default model not found" if weights is None else "CNN weights not found"
            raise ModelNotFoundError(
                f"{what}: {w} (train one with 'poseviewer train-2d' or convert the release "
                "with 'poseviewer convert-release')")
        model = load_cpm(w)
        if pose_model is None:
            if not DEFAULT_POSE_MODEL.is_file():
                raise ModelNotFoundError(
                    f"default 3D model not found: {DEFAULT_POSE_MODEL} (train it with "
                    "'poseviewer train-3d' or pass pose_model=<path to a .mat or .safetensors>)")
            pose_model = DEFAULT_POSE_MODEL
        pose_path = str(pose_model) if isinstance(pose_model, (str, os.PathLike)) else None
        try:
            pm = load_pose_model(pose_model)
        except ModelFileNotFoundError as exc:
            raise ModelNotFoundError(str(exc)) from exc
        except ModelFileError as exc:
            raise WeightsError(str(exc)) from exc
        person = (load_cpm(person_weights, what="person weights (PersonNet)")
                  if person_weights is not None else None)
        info = {"weights": str(w), "pose_model": pose_path,
                "person_weights": None if person_weights is None else str(person_weights)}
        return cls(model, pm, person, device=device, info=info, **kwargs)

    @classmethod
    def default(cls, device: Any = None, **kwargs: Any) -> Estimator:
        """The bundled CNN and 3D model (``resources/models``)."""
        return cls.load(None, None, device=device, **kwargs)

    @property
    def model(self) -> Any:
        """The backend's network (a ``LiftingCPM`` for ``CPMBackend``)."""
        return getattr(self.backend, "model", None)

    @property
    def bf16(self) -> bool:
        """Run the network under bfloat16 autocast. Set where bf16 is not native (a CPU
        without AVX512-BF16/AMX), it stays off and ``notes`` says so."""
        return bool(getattr(self.backend, "bf16", False))

    @bf16.setter
    def bf16(self, on: bool) -> None:
        on = bool(on)
        if on and not native_bf16(self.device):
            note = ("bf16 requested, but this CPU has no native bfloat16 (AVX512-BF16 or "
                    "AMX): running float32 instead (emulated bf16 is tens of times slower)")
            if note not in self.notes:
                self.notes.append(note)
            on = False
        if hasattr(self.backend, "bf16"):
            self.backend.bf16 = on
        if self.person_finder is not None:
            self.person_finder.bf16 = on

    @property
    def precision(self) -> str:
        """'fp32', or 'int8': the 2D network's convolutions quantised (x86 backend, CPU
        only; ``poseviewer.cnn.int8``) with the calibration shipped beside its weights
        (``int8_file``). Setting 'int8' loads that file once (a few seconds); a missing or
        damaged file raises ``Int8Error`` and leaves float32."""
        return "int8" if getattr(self.model, "int8", None) is not None else "fp32"

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
        model = self.model
        if value == "fp32":
            if isinstance(model, LiftingCPM):
                attach_int8(model, None)
            return
        if not isinstance(model, LiftingCPM):
            raise Int8Error("int8 needs one of poseviewer's 2D networks (a LiftingCPM)")
        if self.device.type != "cpu":
            raise Int8Error(f"int8 runs on the CPU only (device {self.device})")
        if self._int8 is None:
            self._int8 = load_int8(model, self.int8_file)
        attach_int8(model, self._int8)

    @property
    def stages(self) -> int:
        """How many of the 2D network's stages run (default all, ``backend.num_stages``):
        with k fewer, the later stages' heads, fusion and lifting are not computed and each
        person's ``stages`` holds k entries, equal to a full run's first k (the last of
        them is the result). ``Estimator(stages=1)``, ``poseviewer estimate --stages 1``.
        A backend that cannot stop early runs all its stages (setting fewer raises
        ``ValueError``)."""
        got = getattr(self.backend, "stages", None)
        return int(self.backend.num_stages if got is None else got)

    @stages.setter
    def stages(self, k: int | None) -> None:
        n = int(self.backend.num_stages)
        k = check_stages(k, n)
        if not hasattr(self.backend, "stages"):
            if k != n:
                raise ValueError(f"this network's backend ({type(self.backend).__name__}) "
                                 f"runs all its {n} stages; it cannot stop after {k}")
            return
        self.backend.stages = None if k == n else k

    @property
    def int8_file(self) -> Path:
        """The int8 calibration of this estimator's 2D network: ``info['int8_file']``, else
        ``<weights stem>.int8.safetensors`` beside its weights (the bundled ones by
        default)."""
        given = self.info.get("int8_file")
        if given:
            return Path(given)
        return calibration_path(self.info.get("weights") or DEFAULT_CNN)

    @property
    def elevation_search(self) -> bool:
        """Whether the 3D fit searches the camera's elevation as well as the yaw (the 3D
        model's ``elevation_search``). On by default (``Estimator(elevation_search=True)``,
        set on the 3D model it is given); ``Estimator(elevation_search=False)`` lifts with
        the release's yaw-only fit. False without a 3D model."""
        return bool(getattr(self.pose_model, "elevation_search", False))

    @elevation_search.setter
    def elevation_search(self, on: bool) -> None:
        if self.pose_model is not None:
            self.pose_model.elevation_search = bool(on)

    @property
    def fov(self) -> float:
        """The photo camera's field of view across the image's longer side, degrees: each
        person's 2D joints are re-projected into a virtual camera looking along their own
        ray before the 3D fit (``poseviewer.camera``); 0: orthographic, the
        joints are lifted as they are. Default ``DEFAULT_FOV_DEG``."""
        return self._fov

    @fov.setter
    def fov(self, deg: float | None) -> None:
        self._fov = check_fov(deg)

    @property
    def flip_test(self) -> bool:
        """The network's mirror test-time augmentation (``CPMConfig.flip_test``): every
        stage also runs on the mirrored crop (about twice the network's work, more
        accurate). The weights say the default; setting it where the network cannot (maps
        without logits) leaves it off and ``notes`` says so."""
        model = self.model
        return bool(getattr(getattr(model, "config", None), "flip_test", False))

    @flip_test.setter
    def flip_test(self, on: bool) -> None:
        model = self.model
        cfg = getattr(model, "config", None)
        if cfg is None or not hasattr(model, "set_flip_test"):
            return
        on = bool(on)
        if on and cfg.map_activation != "softmax":
            note = ("mirror test-time augmentation requested, but this network's maps have "
                    "no logits (map_activation 'linear'): single pass")
            if note not in self.notes:
                self.notes.append(note)
            on = False
        model.set_flip_test(on)

    # ---- the phases ------------------------------------------------------------------------
    def load_image(self, image: Any) -> LoadedImage:
        """Phase 1: the image as RGB uint8 (downscaled above ``max_pixels``)."""
        return load_image(image, self.max_pixels)

    def people(self, loaded: LoadedImage, boxes: Any = None) -> People:
        """Phase 2: who to analyse, in analysed-image pixels."""
        rgb = loaded.rgb
        h, w = rgb.shape[:2]
        if boxes is not None:
            return self._user_people(boxes, *loaded.original_size, loaded.scale)
        if self.person_finder is not None:
            found = self.person_finder.centres(rgb)
            half = self.backend.input_size / 2
            cs = np.array([[xc, yc] for xc, yc, _, _ in found], dtype=np.float64).reshape(-1, 2)
            s = np.array([f[2] for f in found], dtype=np.float64)
            p = People.make(np.c_[cs - half, cs + half] / s[:, None] if len(found) else [],
                            [f[3] for f in found], "detector",
                            [(xc, yc, sc) for xc, yc, sc, _ in found])
            p.centres = cs / s[:, None] if len(found) else p.centres
            if not len(p):
                p.messages.append("no person found")
            return p
        if self.detector is not None:
            boxes_, scores = _boxes_scores(self.detector(rgb))
            if len(boxes_):
                return People.make(boxes_, scores, "detector")
        whole = People.make([[0.0, 0.0, w, h]], [1.0], "whole-image")
        whole.centres = np.array([[w / 2, h / 2]])
        if self.detector is not None:
            whole.messages.append("the person detector found nobody; analysing the whole "
                                  "image as one person")
        return whole

    def _user_people(self, boxes: Any, w: int, h: int, scale: float) -> People:
        """User boxes given in original pixels (``w`` x ``h``) -> analysed pixels."""
        arr = np.asarray(boxes, dtype=np.float64)
        if arr.size == 0:
            p = People.make([], [], "user")
            p.messages.append("no person boxes given")
            return p
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
            raise ValueError(f"boxes must be (N, 4) finite x0, y0, x1, y1; got shape "
                             f"{np.shape(boxes)}")
        for b in arr:
            if b[2] <= b[0] or b[3] <= b[1]:
                raise ValueError(f"box {b.tolist()} is empty (need x1 > x0 and y1 > y0)")
            if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
                raise ValueError(f"box {b.tolist()} lies wholly outside the {w}x{h} image")
        p = People.make(arr * scale, np.ones(len(arr)), "user")
        p.centres = (arr[:, :2] + arr[:, 2:]) / 2 * scale
        p.given = arr
        return p

    def crops(self, loaded: LoadedImage, people: People) -> Crops:
        """Phase 3: one ``input_size`` crop per person and its crop -> original affine."""
        rgb = loaded.rgb
        spec = self.backend.input_spec
        size = self.backend.input_size
        h, w = rgb.shape[:2]
        release_norm = None
        images, to_image = [], []
        for i in range(len(people)):
            rc = people.release_centres[i]
            if rc is None and self.backend.joint_reading == "release" \
                    and people.sources[i] == "whole-image":
                s = size / h
                rc = (int(round(w * s / 2)), int(round(h * s / 2)), s)
            if rc is not None:  # the release's resize + pad + crop
                xc, yc, s = rc
                if release_norm is None:
                    release_norm = normalise(release_resize(rgb, spec)[0], spec)
                images.append(crop_centred(release_norm, xc, yc, size))
                to_image.append(np.array([[1 / s, 0, (xc - size / 2) / s],
                                          [0, 1 / s, (yc - size / 2) / s]]))
            else:
                bw, bh = people.boxes[i, 2] - people.boxes[i, 0], \
                    people.boxes[i, 3] - people.boxes[i, 1]
                scale = spec.box_fill * size / max(bw, bh, 1.0)
                crop, m = warp_crop(rgb, people.centres[i], scale, spec)
                images.append(crop)
                to_image.append(m)
        m = np.stack(to_image)
        prior = self._prior(people, m)
        if (w, h) != tuple(loaded.original_size):
            m = m / loaded.scale  # analysed -> original pixels
        return Crops(np.stack(images), m, prior, tuple(loaded.original_size))

    def _prior(self, people: People, to_image: np.ndarray) -> np.ndarray | None:
        """(P, h, w) log-prior per crop from every person's box (analysed pixels), or None
        when off or when the backend takes none."""
        tp = self.target_prior
        size = getattr(self.backend, "map_size", None)
        if not tp.active or not getattr(self.backend, "accepts_prior", False) or not size:
            return None
        m = _compose(to_image, self.backend.map_to_crop)
        n = len(people)
        if not tp.outside > 0 and n < 2:
            return None
        return np.stack([log_prior(tp, people.boxes[i], np.delete(people.boxes, i, 0), m[i],
                                   (size, size)) for i in range(n)])

    def forward(self, crops: Crops, on_stage: StageCallback | None = None,
                cancel: Any = None) -> list[StageMaps]:
        """Phase 4: every stage for every crop at once."""
        with self._rays(self.map_to_image(crops), crops.image_size):
            if crops.prior is not None:
                return self.backend.forward(crops.images, on_stage=on_stage, cancel=cancel,
                                            prior=crops.prior)
            return self.backend.forward(crops.images, on_stage=on_stage, cancel=cancel)

    @contextmanager
    def _rays(self, map_to_image: np.ndarray, image_size: Any) -> Iterator[None]:
        """Within the block a network that lifts per stage lifts along each crop's ray
        (``fov``): its 3D model is wrapped in a ``RayLifter`` for these crops
        (``map_to_image`` (P, 2, 3); ``image_size`` (2,) or (P, 2)) and restored after."""
        net = getattr(self.backend, "model", None)
        pm = getattr(net, "pose_model", None)
        if (not self.fov or pm is None or image_size is None
                or not getattr(self.backend, "lifts", False)
                or not hasattr(net, "attach_pose_model")):
            yield
            return
        net.attach_pose_model(RayLifter(pm, self.fov, image_size, map_to_image))
        try:
            yield
        finally:
            net.attach_pose_model(pm)

    def map_to_image(self, crops: Crops) -> np.ndarray:
        """(P, 2, 3) map grid -> original-image pixels."""
        return _compose(crops.to_image, self.backend.map_to_crop)

    def joints(self, stages: list[StageMaps], map_to_image: np.ndarray) -> list[np.ndarray]:
        """Phase 5: per stage the (P, J, 2) joints in original-image pixels (the release's
        reading rounds them, as the release does)."""
        return [self._to_image(map_to_image, s.joints) for s in stages]

    def _to_image(self, map_to_image: np.ndarray, joints: np.ndarray) -> np.ndarray:
        """(P, J, 2) map-grid joints -> original-image pixels (rounded for the release's
        reading, as the release does)."""
        xy = _affine_batch(map_to_image, joints)
        return np.round(xy) if self.backend.joint_reading == "release" else xy

    def lift(self, stages: list[StageMaps], joints: list[np.ndarray],
             map_to_image: np.ndarray, cancel: Any = None,
             image_size: tuple[int, int] | None = None) -> list[Fit | None]:
        """Phase 6: per stage the lifting of every person in image pixels: the network's
        own (moved from the map grid), else one post-hoc lifting of all stages and people
        at once (along each person's ray when ``image_size`` (width, height) is given and
        ``fov`` is set), else None (no 3D model)."""
        if any(s.fit is not None for s in stages):
            return [None if s.fit is None else self.judge(s.fit.to_image(map_to_image))
                    for s in stages]
        if self.pose_model is None or not stages:
            return [None] * len(stages)
        check_cancel(cancel)
        n = len(map_to_image)
        xy = np.concatenate(joints)
        fit = self.lift_joints(
            xy, finite_visible(xy, np.concatenate([s.visible for s in stages])), image_size)
        return [fit.select(list(range(t * n, (t + 1) * n))) for t in range(len(stages))]

    def lift_joints(self, joints: np.ndarray, visible: np.ndarray,
                    image_size: tuple[int, int] | None) -> Fit:
        """The judged ``Fit`` of 2D joints (N, 14, 2) in the pixels of an image of
        ``image_size`` (width, height): lifted along each person's ray (``fov``), or as
        they are when ``fov`` is 0 or the size is None. Needs a 3D model."""
        if self.pose_model is None:
            raise ValueError("no 3D model to lift with")
        fov = self.fov if image_size is not None else 0.0
        return self.judge(Fit.from_lift(lift_along_rays(
            self.pose_model, joints, visible, image_size, fov)))

    def judge(self, fit: Fit) -> Fit:
        """``fit`` with its plausibility filled in (``poseviewer.lifting.plausibility``),
        unchanged when there are no limits."""
        return judge_fit(fit, self.plausibility)

    def package(self, loaded: LoadedImage, people: People, map_to_image: np.ndarray,
                stages: list[StageMaps], joints: list[np.ndarray], fits: list[Fit | None],
                result: EstimateResult) -> None:
        """Phase 7: persons and stages into ``result`` (original pixels)."""
        k = loaded.scale
        ow, oh = loaded.original_size
        downscaled = loaded.rgb.shape[1::-1] != tuple(loaded.original_size)
        boxes = people.boxes / k if downscaled else people.boxes
        centres = people.centres / k if downscaled else people.centres
        persons = []
        for i in range(len(people)):
            box, centre = boxes[i], centres[i]
            if people.given is not None:
                box = people.given[i]
                centre = (box[:2] + box[2:]) / 2
            elif people.sources[i] == "whole-image":
                box, centre = np.array([0.0, 0.0, ow, oh]), np.array([ow / 2, oh / 2])
            persons.append(PersonResult(box=box, centre=centre, source=people.sources[i],
                                        map_to_image=map_to_image[i],
                                        score=float(people.scores[i])))
        cnn_xy = [None if s.cnn_joints is None else self._to_image(map_to_image, s.cnn_joints)
                  for s in stages]
        for t, s in enumerate(stages):
            secs = sum(s.seconds.values())
            for i, person in enumerate(persons):
                person.stages.append(StageResult(
                    index=t, cnn_maps=s.cnn[i],
                    projected_maps=None if s.projected is None else s.projected[i],
                    fused_maps=s.fused[i], joints_2d=joints[t][i],
                    cnn_joints_2d=None if cnn_xy[t] is None else cnn_xy[t][i],
                    confidence=s.confidence[i], visible=s.visible[i],
                    fit=None if fits[t] is None else fits[t].select([i]), seconds=secs))
        result.persons = persons

    # ---- the run -----------------------------------------------------------------------------
    def estimate(self, image: Any, boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
                 on_stage: StageCallback | None = None, cancel: Any = None) -> EstimateResult:
        """Analyse one image (path or array). See the module docstring."""
        job = self._begin(image, boxes, cancel)
        if job.crops is None:
            return self._end(job, None)
        t0 = time.perf_counter()
        stages = self.forward(job.crops, on_stage, cancel)
        job.timings["cnn"] = time.perf_counter() - t0
        return self._end(job, stages, cancel)

    def estimate_many(self, images: Sequence[Any], batch_size: int | None = None,
                      return_exceptions: bool = False) -> list[EstimateResult | Exception]:
        """Analyse several images (paths, arrays or ``LoadedImage`` objects) with one
        network forward over the crops of all of them. The results equal those of
        :meth:`estimate` on each image (the phases are the same; only ``forward`` sees the
        crops of every image at once; ``timings['cnn']`` is the image's share of the batch).
        ``batch_size``: the network sees exactly this many crops per forward (the last
        batch padded with blank crops), so an image's result does not depend on which other
        images share its batch (on CPU the convolutions' rounding depends on the batch size,
        not on the batch's other crops); None: one forward of all crops, unpadded. Results
        agree with :meth:`estimate`'s to float32 rounding (the batch size differs), and are
        bit-identical between calls with the same ``batch_size`` and torch thread count.
        ``return_exceptions``: an image that fails gives its exception in its place instead
        of raising (the others still run)."""
        jobs: list[_Job | Exception] = []
        for image in images:
            try:
                jobs.append(self._begin(image, None, None))
            except Exception as exc:  # noqa: BLE001 - handed back or re-raised below
                if not return_exceptions:
                    raise
                jobs.append(exc)
        todo = [j for j in jobs if isinstance(j, _Job) and j.crops is not None]
        per_job: dict[int, list[StageMaps]] = {}
        if todo:
            t0 = time.perf_counter()
            priors = None
            if any(j.crops.prior is not None for j in todo):
                priors = np.concatenate([
                    j.crops.prior if j.crops.prior is not None else np.zeros(
                        (len(j.crops.images),) + (self.backend.map_size,) * 2, np.float32)
                    for j in todo])
            rays = (np.concatenate([self.map_to_image(j.crops) for j in todo]),
                    np.concatenate([np.tile(np.asarray(j.crops.image_size, np.float64),
                                            (len(j.crops.images), 1)) for j in todo]))
            stages = self._forward_padded(np.concatenate([j.crops.images for j in todo]),
                                          batch_size, priors, rays)
            cnn_s = time.perf_counter() - t0
            n_all = sum(len(j.crops.images) for j in todo)
            start = 0
            for j in todo:
                n = len(j.crops.images)
                per_job[id(j)] = [_slice_stage(s, start, start + n) for s in stages]
                j.timings["cnn"] = cnn_s * n / n_all
                start += n
        out: list[EstimateResult | Exception] = []
        for j in jobs:
            if isinstance(j, Exception):
                out.append(j)
                continue
            try:
                out.append(self._end(j, per_job.get(id(j))))
            except Exception as exc:  # noqa: BLE001 - handed back or re-raised
                if not return_exceptions:
                    raise
                out.append(exc)
        return out

    def _forward_padded(self, crops: np.ndarray, batch_size: int | None,
                        prior: np.ndarray | None = None,
                        rays: tuple[np.ndarray, np.ndarray] | None = None) -> list[StageMaps]:
        """``forward`` in batches of exactly ``batch_size`` crops (the last one padded with
        blank crops, dropped again); None: all at once. ``prior``: per crop, or None.
        ``rays``: per crop its map -> image affine (P, 2, 3) and image size (P, 2), for
        the per-stage lifting along each person's ray (``_rays``), or None."""

        def fwd(c: np.ndarray, p: np.ndarray | None, a: int = 0) -> list[StageMaps]:
            m = sz = None
            if rays is not None:  # padded rows repeat the last crop's camera
                rows = np.minimum(np.arange(a, a + len(c)), len(rays[0]) - 1)
                m, sz = rays[0][rows], rays[1][rows]
            with self._rays(m, sz):
                return self.backend.forward(c) if p is None else \
                    self.backend.forward(c, prior=p)

        if batch_size is None or len(crops) == batch_size:
            return fwd(crops, prior)
        b = max(int(batch_size), 1)
        parts = []
        for a in range(0, len(crops), b):
            chunk = crops[a:a + b]
            pc = None if prior is None else prior[a:a + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), chunk.dtype)])
                if pc is not None:
                    pc = np.concatenate([pc, np.zeros((b - n, *pc.shape[1:]), pc.dtype)])
            parts.append([_slice_stage(s, 0, n) for s in fwd(chunk, pc, a)])
        if len(parts) == 1:
            return parts[0]
        return [_concat_stages([p[t] for p in parts]) for t in range(len(parts[0]))]

    def _begin(self, image: Any, boxes: Any, cancel: Any) -> _Job:
        """Phases load, people and crops of one image (``crops`` None when nobody)."""
        t_start = time.perf_counter()
        timings: dict[str, float] = {}

        def timed(name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kw)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
            return out

        loaded = image if isinstance(image, LoadedImage) else \
            timed("load", self.load_image, image)
        messages = list(loaded.messages)
        if loaded.rgb.shape[1::-1] != tuple(loaded.original_size):
            messages.append("the analysis ran on the downscaled copy; joints and boxes are "
                            "reported in original image pixels")
        check_cancel(cancel)
        people = timed("detect", self.people, loaded, boxes)
        messages += people.messages + self.notes
        result = EstimateResult(image_size=tuple(loaded.original_size), persons=[],
                                timings=timings, model=self._model_info(),
                                device=str(self.device), image_path=loaded.path,
                                messages=messages)
        crops = timed("preprocess", self.crops, loaded, people) if len(people) else None
        return _Job(loaded, people, crops, result, timings,
                    time.perf_counter() - t_start)

    def _end(self, job: _Job, stages: list[StageMaps] | None, cancel: Any = None
             ) -> EstimateResult:
        """Phases joints, lift and package of one image, after ``forward``."""
        t_start = time.perf_counter()
        timings = job.timings
        cnn_wall = timings.get("cnn", 0.0)
        if stages is not None and job.crops is not None:
            lift_s = sum(s.seconds.get("lift", 0.0) for s in stages)
            fusion_s = sum(s.seconds.get("fusion", 0.0) for s in stages)
            timings["cnn"] = timings.get("cnn", 0.0) - lift_s - fusion_s
            timings["lift"], timings["fusion"] = lift_s, fusion_s
            m = self.map_to_image(job.crops)
            t0 = time.perf_counter()
            joints = self.joints(stages, m)
            t1 = time.perf_counter()
            fits = self.lift(stages, joints, m, cancel, job.result.image_size)
            t2 = time.perf_counter()
            self.package(job.loaded, job.people, m, stages, joints, fits, job.result)
            timings["read"] = t1 - t0
            timings["lift"] += t2 - t1
            timings["results"] = time.perf_counter() - t2
        timings["total"] = job.seconds + cnn_wall + time.perf_counter() - t_start
        return job.result

    def _model_info(self) -> dict[str, Any]:
        return {
            **self.backend.info(),
            "person_network": None if self.person_finder is None else
            self.person_finder.name,
            "bf16": self.bf16,
            "flip_test": self.flip_test,
            "precision": self.precision,
            "stages": self.stages,
            "elevation_search": self.elevation_search,
            "fov": self.fov,
            **self.info,
        }
