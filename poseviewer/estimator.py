"""``Estimator``: the one API the GUI, the CLI and scripts use to analyse an image.

    from poseviewer import Estimator
    est = Estimator.default()                      # bundled CNN + bundled 3D model
    est = Estimator.load(weights="...", pose_model="...mat or .safetensors")
    result = est.estimate("photo.jpg", boxes=None, on_stage=cb, cancel=token)

People come from user ``boxes``; else PersonNet (when its weights are loaded); else
``poseviewer.detect.find_people`` when that module exists; else the whole image. Each person
is cropped, all crops run through the CNN as one batch (per-stage lifting and fusion inside
the network when it has fusion and a 3D model), and everything is copied into an
``EstimateResult`` (numpy, original image pixels: an image above ``max_pixels`` is analysed
as a downscaled copy, user boxes are given in original pixels and every output coordinate
is mapped back, with a message). ``on_stage(person_index, stage_index, num_stages)``
is called after every stage for every person; ``cancel`` (a ``CancelToken`` or a callable)
stops the run between stages with ``Cancelled``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poseviewer.cnn.cancel import Cancelled, CancelToken, check_cancel
from poseviewer.cnn.lifting_cpm import LiftingCPM
from poseviewer.cnn.ops import legacy_resize
from poseviewer.cnn.preprocess import (
    crop_centred,
    find_person_centres,
    normalise,
    release_resize,
    warp_crop,
)
from poseviewer.cnn.weights import WeightsError, load_cpm
from poseviewer.imageio import MAX_PIXELS, ImageError, load_image
from poseviewer.paths import MODELS_DIR
from poseviewer.result import EstimateResult, PersonResult, StageResult

__all__ = ["Cancelled", "CancelToken", "Estimator", "ImageError", "ModelNotFoundError",
           "WeightsError", "DEFAULT_CNN", "DEFAULT_POSE_MODEL"]

DEFAULT_CNN = MODELS_DIR / "cpm_default.safetensors"
DEFAULT_POSE_MODEL = MODELS_DIR / "pose3d_default.safetensors"

StageCallback = Callable[[int, int, int], None]


class ModelNotFoundError(WeightsError, FileNotFoundError):
    """A default or requested model file does not exist."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """CUDA when available (and not asked otherwise), else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_pose_model(source: Any) -> Any:
    """A ``PoseModel3D`` from a path (.mat: the released model; else safetensors) or as is."""
    if source is None or not isinstance(source, (str, os.PathLike)):
        return source
    path = Path(source)
    if not path.is_file():
        raise ModelNotFoundError(f"3D pose model not found: {path}")
    from poseviewer.lifting import PoseModel3D

    try:
        if path.suffix.lower() == ".mat":
            return PoseModel3D.from_mat(path)
        return PoseModel3D.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"cannot load the 3D pose model {path}: {exc}") from exc


def _affine_points(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def _affine_batch(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(P, 2, 3) affines applied to (P, K, 2) points, one affine per person."""
    xy = np.asarray(xy, dtype=np.float64)
    return np.einsum("pij,pkj->pki", m[:, :, :2], xy) + m[:, None, :, 2]


def _fit_to_image(fit: Any, m: np.ndarray | None) -> Any:
    """Map a numpy LiftResult from the frame it was lifted in to image pixels through the
    uniform-scale affine ``m``: projected joints (best and every component's), the centre
    and the normalisation length. 3D poses are frame-invariant."""
    if m is None:
        return fit
    comps = fit.components
    updates = {"joints_2d": _affine_points(m, fit.joints_2d)}
    if getattr(fit, "centre", None) is not None:
        updates["centre"] = _affine_points(m, fit.centre)
    if getattr(fit, "norm", None) is not None:
        updates["norm"] = np.asarray(fit.norm) * m[0, 0]
    comps = dataclasses.replace(comps, joints_2d=_affine_points(m, comps.joints_2d))
    return dataclasses.replace(fit, components=comps, **updates)


class _Person:
    """A person to analyse, before the CNN."""

    def __init__(self, box: np.ndarray, centre: np.ndarray, source: str, score: float = 1.0):
        self.box = np.asarray(box, dtype=np.float64)
        self.centre = np.asarray(centre, dtype=np.float64)
        self.source = source
        self.score = float(score)
        self.crop: np.ndarray | None = None
        self.crop_to_image: np.ndarray | None = None
        self.release_centre: tuple[int, int, float] | None = None  # xc, yc, scale
        self.given_box: np.ndarray | None = None  # a user box as given (original pixels)


class Estimator:
    """Finds people, runs the CNN (+ per-stage lifting and fusion) and fills an
    ``EstimateResult``. See the module docstring."""

    def __init__(self, model: LiftingCPM, pose_model: Any = None,
                 person_model: LiftingCPM | None = None, device: str | torch.device | None = None,
                 bf16: bool = False, max_pixels: int = MAX_PIXELS,
                 info: dict[str, Any] | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.pose_model = pose_model
        if pose_model is not None:
            self.model.attach_pose_model(pose_model)
        self.person_model = None
        if person_model is not None:
            if person_model.config.peaks is None:
                raise WeightsError("the person network's config has no peak settings "
                                   "(expected a PersonNet)")
            self.person_model = person_model.eval().to(self.device,
                                                       memory_format=torch.channels_last)
        self.bf16 = bool(bf16)
        self.max_pixels = int(max_pixels)
        self.info = dict(info or {})

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def load(cls, weights: str | os.PathLike[str] | None = None, pose_model: Any = None,
             device: str | torch.device | None = None,
             person_weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> Estimator:
        """Load CNN weights (default: the bundled ``cpm_default.safetensors``), a 3D model
        (a path, a ``PoseModel3D`` or None for the bundled ``pose3d_default``) and optionally
        PersonNet weights. Missing files raise ``ModelNotFoundError``."""
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
        pm = load_pose_model(pose_model)
        person = load_cpm(person_weights) if person_weights is not None else None
        info = {"weights": str(w), "pose_model": pose_path,
                "person_weights": None if person_weights is None else str(person_weights)}
        return cls(model, pm, person, device=device, info=info, **kwargs)

    @classmethod
    def default(cls, device: str | torch.device | None = None, **kwargs: Any) -> Estimator:
        """The bundled CNN and 3D model (``resources/models``)."""
        return cls.load(None, None, device=device, **kwargs)

    # ---- people ------------------------------------------------------------------------------
    def _user_people(self, boxes: Any, w: int, h: int, scale: float = 1.0) -> list[_Person]:
        """People from user boxes given in original image pixels (``w`` x ``h``); the
        returned boxes and centres are in the analysed image (original times ``scale``)."""
        arr = np.asarray(boxes, dtype=np.float64)
        if arr.size == 0:
            return []
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
            raise ValueError(f"boxes must be (N, 4) finite x0, y0, x1, y1; got shape "
                             f"{np.shape(boxes)}")
        people = []
        for b in arr:
            if b[2] <= b[0] or b[3] <= b[1]:
                raise ValueError(f"box {b.tolist()} is empty (need x1 > x0 and y1 > y0)")
            if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
                raise ValueError(f"box {b.tolist()} lies wholly outside the {w}x{h} image")
            p = _Person(b * scale, (b[:2] + b[2:]) / 2 * scale, "user")
            p.given_box = b
            people.append(p)
        return people

    def _personnet_people(self, rgb: np.ndarray) -> list[_Person]:
        pm = self.person_model
        cfg = pm.config
        resized, s = release_resize(rgb, cfg)
        x = torch.from_numpy(normalise(resized, cfg)).permute(2, 0, 1)[None]
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            out = pm(x, read_joints=False)
        pmap = legacy_resize(out.final.cnn.float(), resized.shape[:2])[0, 0].cpu().numpy()
        people = []
        half = self.model.config.input_size / 2
        for xc, yc in find_person_centres(pmap, cfg.peaks):
            centre = np.array([xc, yc], dtype=np.float64) / s
            box = np.array([xc - half, yc - half, xc + half, yc + half]) / s
            p = _Person(box, centre, "detector", float(pmap[yc, xc]))
            p.release_centre = (xc, yc, s)
            people.append(p)
        return people

    @staticmethod
    def _detector_people(rgb: np.ndarray) -> list[_Person] | None:
        """People from ``poseviewer.detect.find_people``; None when that module is absent."""
        if importlib.util.find_spec("poseviewer.detect") is None:
            return None
        detect = importlib.import_module("poseviewer.detect")
        people = []
        for box, score in detect.find_people(rgb):
            b = np.asarray(box, dtype=np.float64)
            people.append(_Person(b, (b[:2] + b[2:]) / 2, "detector", float(score)))
        return people

    def _whole_image(self, w: int, h: int) -> _Person:
        return _Person(np.array([0.0, 0.0, w, h]), np.array([w / 2, h / 2]), "whole-image")

    # ---- crops -------------------------------------------------------------------------------
    def _prepare(self, rgb: np.ndarray, people: list[_Person]) -> np.ndarray:
        cfg = self.model.config
        size = cfg.input_size
        h, w = rgb.shape[:2]
        release_norm = None
        for p in people:
            if p.release_centre is None and cfg.joint_reading == "release" \
                    and p.source == "whole-image":
                s = size / h
                p.release_centre = (int(round(w * s / 2)), int(round(h * s / 2)), s)
            if p.release_centre is not None:  # the release's resize + pad + crop
                xc, yc, s = p.release_centre
                if release_norm is None:
                    release_norm = normalise(release_resize(rgb, cfg)[0], cfg)
                p.crop = crop_centred(release_norm, xc, yc, size)
                p.crop_to_image = np.array([[1 / s, 0, (xc - size / 2) / s],
                                            [0, 1 / s, (yc - size / 2) / s]])
            else:
                bw, bh = p.box[2] - p.box[0], p.box[3] - p.box[1]
                scale = cfg.box_fill * size / max(bw, bh, 1.0)
                p.crop, p.crop_to_image = warp_crop(rgb, p.centre, scale, cfg)
        return np.stack([p.crop for p in people])

    def _autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ---- the run -----------------------------------------------------------------------------
    def estimate(self, image: Any, boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
                 on_stage: StageCallback | None = None, cancel: Any = None) -> EstimateResult:
        """Analyse one image (path or array). See the module docstring."""
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        loaded = load_image(image, self.max_pixels)
        rgb = loaded.rgb
        h, w = rgb.shape[:2]
        ow, oh = loaded.original_size
        k = loaded.scale  # analysed / original pixels
        messages = list(loaded.messages)
        if (w, h) != (ow, oh):
            messages.append("the analysis ran on the downscaled copy; joints and boxes are "
                            "reported in original image pixels")
        timings["load"] = time.perf_counter() - t0
        check_cancel(cancel)

        t0 = time.perf_counter()
        if boxes is not None:
            people = self._user_people(boxes, ow, oh, k)
            if not people:
                messages.append("no person boxes given")
        elif self.person_model is not None:
            people = self._personnet_people(rgb)
            if not people:
                messages.append("no person found")
        else:
            found = self._detector_people(rgb)
            if found:
                people = found
            else:
                if found is not None:
                    messages.append("the person detector found nobody; analysing the whole "
                                    "image as one person")
                people = [self._whole_image(w, h)]
        timings["detect"] = time.perf_counter() - t0
        cfg = self.model.config
        result = EstimateResult(image_size=(ow, oh), persons=[], timings=timings,
                                model=self._model_info(), device=str(self.device),
                                image_path=loaded.path, messages=messages)
        if not people:
            timings["total"] = time.perf_counter() - t_start
            return result

        t0 = time.perf_counter()
        crops = self._prepare(rgb, people)
        if (w, h) != (ow, oh):  # report in original pixels: analysed -> original
            for p in people:
                p.crop_to_image = p.crop_to_image / k
                p.box, p.centre = p.box / k, p.centre / k
        for p in people:
            if p.given_box is not None:
                p.box, p.centre = p.given_box, (p.given_box[:2] + p.given_box[2:]) / 2
            elif p.source == "whole-image":
                p.box, p.centre = np.array([0.0, 0.0, ow, oh]), np.array([ow / 2, oh / 2])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        timings["preprocess"] = time.perf_counter() - t0
        n = len(people)

        def stage_done(t: int, num: int) -> None:
            if on_stage is not None:
                for i in range(n):
                    on_stage(i, t, num)

        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            out = self.model(x, on_stage=stage_done, cancel=cancel)
        forward = time.perf_counter() - t0
        lift_s = sum(s.seconds.get("lift", 0.0) for s in out.stages)
        fusion_s = sum(s.seconds.get("fusion", 0.0) for s in out.stages)
        timings["cnn"] = forward - lift_s - fusion_s
        timings["lift"] = lift_s
        timings["fusion"] = fusion_s

        t0 = time.perf_counter()
        stride = cfg.stride
        J = cfg.num_joints
        crop_to_image = np.stack([p.crop_to_image for p in people])
        map_to_image = crop_to_image.copy()  # crop_to_image o (map xy -> crop xy = stride xy)
        map_to_image[:, :, :2] *= stride
        persons = [PersonResult(box=p.box, centre=p.centre, source=p.source,
                                map_to_image=map_to_image[i], score=p.score)
                   for i, p in enumerate(people)]
        stage_joints = []
        for s in out.stages:
            # the network read the joints (grid argmax, or the release reading / stride);
            # the in-network lift used the same joints, so joints_2d and fit agree
            xy = s.joints.float().cpu().numpy().astype(np.float64)
            img_xy = _affine_batch(map_to_image, xy)
            if cfg.joint_reading == "release":  # the release rounds image positions
                img_xy = np.round(img_xy)
            conf = s.confidence.float().cpu().numpy().astype(np.float64)
            stage_joints.append((img_xy, conf, conf > cfg.visibility_threshold))
        timings["read"] = time.perf_counter() - t0

        # post-hoc lifting (in image pixels) when the network did not lift per stage
        posthoc = None
        if self.pose_model is not None and out.final.lift is None:
            t0 = time.perf_counter()
            check_cancel(cancel)
            joints = torch.from_numpy(np.concatenate([j[0] for j in stage_joints]))
            vis = torch.from_numpy(np.concatenate([j[2] for j in stage_joints]))
            posthoc = self.pose_model.lift(joints.to(torch.float64), vis)
            timings["lift"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        for t, s in enumerate(out.stages):
            img_xy, conf, vis = stage_joints[t]
            cnn = s.cnn[:, :J].float().cpu().numpy()
            fused = s.fused[:, :J].float().cpu().numpy()
            proj = None if s.projected is None else s.projected[:, :J].float().cpu().numpy()
            secs = sum(s.seconds.values())
            for i in range(n):
                if s.lift is not None:
                    fit = _fit_to_image(s.lift.select(torch.tensor([i])).numpy(),
                                        map_to_image[i])
                elif posthoc is not None:
                    fit = posthoc.select(torch.tensor([t * n + i])).numpy()
                else:
                    fit = None
                persons[i].stages.append(StageResult(
                    index=t, cnn_maps=cnn[i], projected_maps=None if proj is None else proj[i],
                    fused_maps=fused[i], joints_2d=img_xy[i], confidence=conf[i],
                    visible=vis[i], fit=fit, seconds=secs))
        timings["results"] = time.perf_counter() - t0
        result.persons = persons
        timings["total"] = time.perf_counter() - t_start
        return result

    def _model_info(self) -> dict[str, Any]:
        cfg = self.model.config
        fw = self.model.fusion_weights()
        return {
            "name": cfg.name,
            "config": cfg.to_dict(),
            "fusion_active": self.model.fusion_active,
            "fusion_weights": None if fw is None else fw.detach().cpu().tolist(),
            "person_network": None if self.person_model is None else
            self.person_model.config.name,
            "bf16": self.bf16,
            **self.info,
        }
