"""The result objects every view and exporter reads, and the one table that describes them.

``EstimateResult`` -> ``persons[p]`` (``PersonResult``) -> ``stages[t]`` (``StageResult``)
-> ``fit`` (a :class:`Fit`: the lifting of that stage's joints, every mixture component;
leading axis N = 1 in a stage). A video is a :class:`ResultSequence` of per-frame results.

Everything here is numpy: torch stays inside the models, and :meth:`Fit.from_lift`
converts a lifting result at the boundary (duck-typed, so this module never imports torch).

The field table
---------------
Every stored array is described once, in :data:`PERSON_FIELDS`, :data:`STAGE_FIELDS`,
:data:`FIT_FIELDS` and :data:`COMPONENT_FIELDS` (:class:`FieldSpec`: name, shape, dtype,
unit, frame, description, and its key in each file format). The JSON, NPZ and CSV writers
and readers and ``docs/export-format.md`` follow these tables. Shapes are symbolic and
bound from the data, never hard-coded: ``J`` 2D joints (14 for CPM-14), ``J3`` 3D joints
(17 for H36M-17), ``K`` mixture components, ``C`` coefficients (3 translations + the basis
size of the 3D model).

Conventions
-----------
* 2D joints are image pixels, (x, y) order, CPM-14 joint order (``poseviewer.skeleton.CPM14``).
* Belief maps are float32 (14, Hm, Wm) on the network's map grid (background channel
  dropped); ``PersonResult.map_to_image`` maps map-grid (x, y, 1) to image (x, y).
* 3D poses are H36M-17 (``poseviewer.skeleton.H36M17``), x = image right, y = depth away
  from the camera, z = up, in the lifting's size-normalised millimetres (see the lifting
  spec: every skeleton is scaled to the same total bone size). ``EstimateResult.frame_3d``
  says where the origin is: 'lifting' (the lifting's own frame, near the joint centroid) or
  'pelvis' (root-relative: every pose's pelvis at the origin, as exports write by default).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from poseviewer.skeleton import CPM14, H36M17, finite_visible

#: The lifting's scale cap (lifting spec, step 3): a component whose scale sits exactly here
#: was refitted with the capped scale.
SCALE_CAP = -0.001

#: ``EstimateResult.frame_3d`` values: the lifting's own frame, or pelvis at the origin.
FRAMES_3D = ("lifting", "pelvis")


# ---- the field table --------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """One stored field: what it is, and its key in each file format."""

    name: str
    """Attribute name on the result object."""
    shape: tuple[str | int, ...]
    """Per item (person / stage / person's fit), symbolic: J, J3, K, C or a number."""
    dtype: str
    """'f8', 'f4', 'i8', 'bool' or 'str'."""
    unit: str
    frame: str
    """Coordinate frame ('image' pixels, 'pose_3d', 'map grid -> image', or '-')."""
    description: str
    json: str | None = None
    """JSON key (default: ``name``)."""
    npz: str | None = None
    """NPZ key (default: ``name``)."""
    csv: str | None = None
    """CSV column, for per-component scalars repeated on every 3D row; for a per-joint
    3 x 3 covariance the column prefix of its six entries (``<prefix>xx, xy, xz, yy, yz,
    zz``) on the joint's 3D row (None: not in the CSV)."""
    optional: bool = False
    """May be absent (None) in a result, e.g. when the lifting does not provide it."""
    transform: str | None = None
    """How the field moves with an image affine: 'point' (x, y), 'length', or None."""

    @property
    def json_key(self) -> str:
        return self.json or self.name

    @property
    def npz_key(self) -> str:
        return self.npz or self.name

    def concrete_shape(self, dims: dict[str, int]) -> tuple[int, ...]:
        """The shape with the symbols of ``dims`` substituted."""
        return tuple(dims[s] if isinstance(s, str) else int(s) for s in self.shape)

    @property
    def np_dtype(self) -> Any:
        return {"f8": np.float64, "f4": np.float32, "i8": np.int64, "bool": bool,
                "str": np.str_}[self.dtype]


PERSON_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("box", (4,), "f8", "pixels", "image", "person box x0, y0, x1, y1",
              npz="boxes", transform="point"),
    FieldSpec("centre", (2,), "f8", "pixels", "image", "person centre (x, y)",
              npz="centres", transform="point"),
    FieldSpec("source", (), "str", "-", "-",
              "where the person came from: user, detector, whole-image or imported",
              npz="person_sources"),
    FieldSpec("score", (), "f8", "-", "-",
              "detection score (1.0 for user boxes, the whole image, imported joints)",
              npz="person_scores"),
    FieldSpec("map_to_image", (2, 3), "f8", "-", "map grid -> image",
              "affine: image_xy = M @ (map_x, map_y, 1)"),
    FieldSpec("track_id", (), "i8", "-", "-",
              "video: the person's id over the frames (absent for photos)",
              npz="person_track_ids", optional=True),
)

STAGE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("joints_2d", ("J", 2), "f8", "pixels", "image",
              "CPM-14 joints read from this stage's output maps, the fused maps when fusion "
              "ran (x, y)", transform="point"),
    FieldSpec("cnn_joints_2d", ("J", 2), "f8", "pixels", "image",
              "fusion ran: the joints read from the CNN's own maps, the ones that were lifted "
              "(absent: the same as joints_2d)", transform="point",
              optional=True),
    FieldSpec("confidence", ("J",), "f8", "-", "-",
              "per-joint confidence of joints_2d (the network's reading: share of the map's "
              "mass around the peak, or the release's column mean; imported: the file's "
              "score)"),
    FieldSpec("visible", ("J",), "bool", "-", "-",
              "confidence above the model's threshold: used by the lifting"),
    FieldSpec("seconds", (), "f8", "seconds", "-", "wall time of the stage",
              npz="stage_seconds"),
    FieldSpec("raw_joints_2d", ("J", 2), "f8", "pixels", "image",
              "video, last stage: the joints as read, before temporal smoothing (joints_2d "
              "then holds the smoothed joints that were lifted; absent when not smoothed)",
              transform="point", optional=True),
)

FIT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("lifted", (), "bool", "-", "-",
              "lifting succeeded (False, with NaN outputs, when < 5 joints were visible)"),
    FieldSpec("plausible", (), "bool", "-", "-",
              "the pose is believable: bone_excess and residual_excess within the limits "
              "of resources/models/plausibility.json (poseviewer.lifting.plausibility); "
              "False when not lifted; absent when not judged", csv="plausible",
              optional=True),
    FieldSpec("bone_excess", (), "f8", "-", "-",
              "how far the limb bones' proportions lie outside their range over the 3D "
              "model's Human3.6M training poses, over the plausibility limit (above 1: "
              "implausible)", csv="bone_excess", optional=True),
    FieldSpec("residual_excess", (), "f8", "-", "-",
              "the best component's residual over the plausibility limit (above 1: "
              "implausible)", csv="residual_excess", optional=True),
    FieldSpec("component", (), "i8", "-", "-", "best mixture component (argmin of score)",
              json="best_component", npz="best_component"),
    FieldSpec("pose_3d", ("J3", 3), "f8", "size-normalised mm", "pose_3d",
              "the best component's 3D pose, H36M-17"),
    FieldSpec("joints_2d", ("J3", 2), "f8", "pixels", "image",
              "the best component's pose projected back into the image",
              npz="fit_joints_2d", transform="point"),
    FieldSpec("centre", (2,), "f8", "pixels", "image",
              "the lifting's step-1 centre (mean of the visible joints)",
              json="lift_centre", npz="fit_centre", optional=True, transform="point"),
    FieldSpec("norm", (), "f8", "pixels", "image",
              "the lifting's step-1 scale m = (min y - max y) / 2 (negative)",
              json="lift_norm", npz="fit_norm", optional=True, transform="length"),
    FieldSpec("joint_cov", ("J3", 3, 3), "f8", "mm^2", "pose_3d",
              "posterior covariance of each joint of the best component's pose (relative "
              "to its joint centroid)", optional=True),
    FieldSpec("joint_cov_dof", (), "f8", "-", "-",
              "degrees of freedom of that posterior, a Student-t: the level-p ellipsoid is "
              "d^2 <= 3 F^-1(p; 3, dof) (dof - 2) / dof in joint_cov's metric",
              optional=True),
    FieldSpec("elevation", (), "f8", "radians", "pose_3d",
              "the camera's elevation the best component's fit chose with its yaw "
              "(positive: the camera looks down on the person; 0: level, and always 0 for "
              "the release's yaw-only fit); the 3D pose stays upright (z up) whatever it is",
              json="camera_elevation", npz="fit_elevation", optional=True),
)

COMPONENT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("pose_3d", ("K", "J3", 3), "f8", "size-normalised mm", "pose_3d",
              "each component's 3D pose", npz="components_pose_3d"),
    FieldSpec("joints_2d", ("K", "J3", 2), "f8", "pixels", "image",
              "each component's pose projected back into the image",
              npz="components_joints_2d", transform="point"),
    FieldSpec("score", ("K",), "f8", "-", "-",
              "residual + log-det x scale^2; the best component minimises it",
              npz="components_score", csv="score"),
    FieldSpec("residual", ("K",), "f8", "pixels^2 (normalised)", "-",
              "least-squares residual at the chosen yaw", npz="components_residual",
              csv="residual"),
    FieldSpec("scale", ("K",), "f8", "-", "-",
              "the fitted scale (negative; exactly -0.001 where capped)",
              npz="components_scale", csv="scale"),
    FieldSpec("yaw", ("K",), "f8", "radians", "pose_3d", "chosen yaw theta*",
              npz="components_yaw", csv="yaw_rad"),
    FieldSpec("capped", ("K",), "bool", "-", "-",
              "the scale was capped at -0.001 (lifting spec step 3)",
              npz="components_capped", csv="capped"),
    FieldSpec("coeffs", ("K", "C"), "f8", "-", "-",
              "c_1..c_C: 3 translations then the basis coefficients, divided by the scale",
              npz="components_coeffs", optional=True),
    FieldSpec("joint_cov", ("K", "J3", 3, 3), "f8", "mm^2", "pose_3d",
              "posterior covariance of each joint of each component's pose",
              npz="components_joint_cov", csv="cov_", optional=True),
    FieldSpec("joint_cov_dof", ("K",), "f8", "-", "-",
              "degrees of freedom of each component's posterior (Student-t)",
              npz="components_joint_cov_dof", csv="cov_dof", optional=True),
    FieldSpec("elevation", ("K",), "f8", "radians", "pose_3d",
              "camera elevation chosen with the yaw (positive: looking down)",
              npz="components_elevation", csv="elevation_rad", optional=True),
)

#: Per frame of a video (:class:`ResultSequence`).
FRAME_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("index", (), "i8", "-", "-",
              "frame number in the source (0-based; with --every N every N-th frame)",
              json="frame_index", npz="frame_index"),
    FieldSpec("time", (), "f8", "seconds", "-",
              "time of the frame from the start of the video (the video's own timestamps, "
              "so variable frame rates keep their times)", json="frame_time", npz="frame_time"),
)

#: Per person id of a video: the animation the BVH export writes (see
#: ``poseviewer.export.video``); F = the frames from the person's first to last lifting.
TRACK_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("track_id", (), "i8", "-", "-", "the person id (PersonResult.track_id)",
              json="id", npz="track_id"),
    FieldSpec("frames", ("F",), "i8", "-", "-",
              "positions in the sequence (0-based) the animation covers, consecutive",
              npz="track_frames"),
    FieldSpec("frame_index", ("F",), "i8", "-", "-", "their frame numbers in the source",
              npz="track_frame_index"),
    FieldSpec("frame_time", ("F",), "f8", "seconds", "-", "their times",
              npz="track_frame_time"),
    FieldSpec("filled", ("F",), "bool", "-", "-",
              "the person was not lifted in this frame: the pose is interpolated between "
              "the nearest lifted frames (linearly, per joint)", npz="track_filled"),
    FieldSpec("bone_lengths", ("J3",), "f8", "size-normalised mm", "pose_3d",
              "one length per bone (ending at each joint; 0 for the root): the median over "
              "the lifted frames", npz="track_bone_lengths"),
    FieldSpec("pose_3d", ("F", "J3", 3), "f8", "size-normalised mm", "pose_3d",
              "the animation: each frame's pose with its bone directions and the clip's "
              "bone lengths, pelvis at the origin (what the BVH encodes)",
              npz="track_pose_3d"),
)

#: Symbols of the shapes above.
SHAPE_SYMBOLS = {"J": f"2D joints ({CPM14.num_joints}, CPM-14)",
                 "J3": f"3D joints ({H36M17.num_joints}, H36M-17)",
                 "K": "mixture components", "C": "coefficients: 3 + the basis size",
                 "F": "frames of a person's animation", "N": "frames of a video",
                 "R": "person ids of a video"}


def _np(x: Any) -> Any:
    """A torch tensor or array-like -> numpy (no torch import here)."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _affine(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def _move(spec: FieldSpec, value: Any, m: np.ndarray) -> Any:
    """Move a field through ``m``: one (2, 3) affine, or (N, 2, 3), one per person (the
    value's leading axis)."""
    if value is None or spec.transform is None:
        return value
    if m.ndim == 3:
        v = np.asarray(value, dtype=np.float64)
        if spec.transform == "point":
            return _affine_per_person(m, v)
        return v * m[:, 0, 0].reshape((-1,) + (1,) * (v.ndim - 1))
    if spec.transform == "point":
        return _affine(m, value)
    return np.asarray(value) * m[0, 0]  # 'length' under a uniform-scale affine


def _affine_per_person(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N, 2, 3) affines applied to (N, ..., 2) points, person n through m[n]."""
    shape = xy.shape
    flat = xy.reshape(shape[0], -1, 2)
    out = np.einsum("nij,nkj->nki", m[:, :, :2], flat) + m[:, None, :, 2]
    return out.reshape(shape)


# ---- the lifting, numpy -------------------------------------------------------------------------
@dataclass
class ComponentFit:
    """Every mixture component's fit, leading dims (N, K); see :data:`COMPONENT_FIELDS`."""

    pose_3d: np.ndarray
    joints_2d: np.ndarray
    score: np.ndarray
    residual: np.ndarray
    scale: np.ndarray
    yaw: np.ndarray
    capped: np.ndarray
    coeffs: np.ndarray | None = None
    joint_cov: np.ndarray | None = None
    joint_cov_dof: np.ndarray | None = None
    elevation: np.ndarray | None = None


@dataclass
class Fit:
    """The lifting of N people (numpy); see :data:`FIT_FIELDS`. In a ``StageResult`` N = 1."""

    lifted: np.ndarray
    component: np.ndarray
    pose_3d: np.ndarray
    joints_2d: np.ndarray
    components: ComponentFit
    centre: np.ndarray | None = None
    norm: np.ndarray | None = None
    joint_cov: np.ndarray | None = None
    joint_cov_dof: np.ndarray | None = None
    elevation: np.ndarray | None = None
    plausible: np.ndarray | None = None
    bone_excess: np.ndarray | None = None
    residual_excess: np.ndarray | None = None

    def __len__(self) -> int:
        return int(np.shape(self.lifted)[0])

    @classmethod
    def from_lift(cls, lift: Any) -> Fit:
        """Copy a lifting result (``poseviewer.lifting.LiftResult``, torch or numpy) into
        numpy, field by field from the table; ``capped`` from its ``scale``."""
        comps = lift.components
        ckw = {f.name: _np(getattr(comps, f.name, None)) for f in COMPONENT_FIELDS
               if f.name != "capped"}
        ckw["scale"] = ckw["scale"].astype(np.float64)
        ckw["capped"] = np.isclose(ckw["scale"], SCALE_CAP, rtol=0.0, atol=1e-12)
        kw = {f.name: _np(getattr(lift, f.name, None)) for f in FIT_FIELDS}
        kw["lifted"] = kw["lifted"].astype(bool)
        kw["component"] = kw["component"].astype(np.int64)
        return cls(components=ComponentFit(**ckw), **kw)

    def select(self, idx: Any) -> Fit:
        """People ``idx`` (an int, a slice or an index array), keeping the leading axis."""
        ii = [idx] if isinstance(idx, (int, np.integer)) else idx

        def take(x: Any) -> Any:
            return None if x is None else np.asarray(x)[ii]

        comps = ComponentFit(**{f.name: take(getattr(self.components, f.name))
                                for f in dataclasses.fields(ComponentFit)})
        return Fit(components=comps, **{f.name: take(getattr(self, f.name))
                                        for f in dataclasses.fields(Fit)
                                        if f.name != "components"})

    @staticmethod
    def concat(fits: Sequence[Fit]) -> Fit:
        """The people of several fits, stacked in order."""

        def cat(vals: list[Any]) -> Any:
            return None if vals[0] is None else np.concatenate(vals)

        comps = ComponentFit(**{f.name: cat([getattr(x.components, f.name) for x in fits])
                                for f in dataclasses.fields(ComponentFit)})
        return Fit(components=comps, **{f.name: cat([getattr(x, f.name) for x in fits])
                                        for f in dataclasses.fields(Fit)
                                        if f.name != "components"})

    def to_image(self, m: np.ndarray) -> Fit:
        """The fit moved through the uniform-scale affine ``m`` (2, 3), or one per person
        (N, 2, 3), into the image: every field the table marks as a point or a length; 3D
        poses are frame-invariant."""
        m = np.asarray(m, dtype=np.float64)
        comps = dataclasses.replace(self.components, **{
            f.name: _move(f, getattr(self.components, f.name), m) for f in COMPONENT_FIELDS
            if f.transform})
        return dataclasses.replace(self, components=comps, **{
            f.name: _move(f, getattr(self, f.name), m) for f in FIT_FIELDS if f.transform})

    def root_relative(self, root: int = 0) -> Fit:
        """The same fit with every 3D pose moved so that joint ``root`` (the pelvis) is at
        the origin (bone vectors, projections and scores unchanged)."""
        pose = np.asarray(self.pose_3d)
        comp = np.asarray(self.components.pose_3d)
        return dataclasses.replace(
            self, pose_3d=pose - pose[..., root:root + 1, :],
            components=dataclasses.replace(self.components,
                                           pose_3d=comp - comp[..., root:root + 1, :]))


# ---- per image ------------------------------------------------------------------------------
@dataclass
class StageResult:
    """One CNN stage of one person."""

    index: int
    """0-based stage index."""
    cnn_maps: np.ndarray
    """(J, Hm, Wm) float32: the CNN's own belief maps of this stage."""
    projected_maps: np.ndarray | None
    """(J, Hm, Wm) float32: Gaussian maps drawn at the lifted pose's projection, or None."""
    fused_maps: np.ndarray
    """(J, Hm, Wm) float32: what the stage passes on (equals ``cnn_maps`` with fusion off)."""
    joints_2d: np.ndarray
    """(J, 2) float64: joints read from this stage's maps, image pixels (x, y)."""
    confidence: np.ndarray
    """(J,) float64: per-joint confidence."""
    visible: np.ndarray
    """(J,) bool: joints judged visible (confidence above the model's threshold); never a
    joint with a NaN or infinite coordinate (``skeleton.finite_visible``, applied here)."""
    fit: Fit | None
    """The lifting of ``joints_2d`` (N = 1, every component), or None if not run."""
    seconds: float = 0.0
    """Wall time of this stage (CNN + lifting + fusion)."""
    cnn_joints_2d: np.ndarray | None = None
    """Fusion ran: (J, 2) the joints read from the CNN's own maps, the ones lifted
    (``joints_2d`` are read from the fused maps, the paper's definition); else None."""
    raw_joints_2d: np.ndarray | None = None
    """Video, last stage, smoothing on: (J, 2) joints as read before the temporal filter
    (``joints_2d`` then holds the smoothed joints that were lifted); else None."""

    def __post_init__(self) -> None:
        if self.fit is not None and not isinstance(self.fit, Fit):  # a lifting result
            self.fit = Fit.from_lift(self.fit)
        self.visible = finite_visible(self.joints_2d, self.visible)


@dataclass
class PersonResult:
    """One person in the image."""

    box: np.ndarray
    """(4,) float64 box in image pixels: x0, y0, x1, y1."""
    centre: np.ndarray
    """(2,) float64 person centre in image pixels (x, y)."""
    source: str
    """Where the person came from: 'user', 'detector', 'whole-image', 'imported' or
    'tracked' (video: the box followed from the previous frame, no detector run)."""
    map_to_image: np.ndarray
    """(2, 3) float64 affine: image_xy = map_to_image @ (map_x, map_y, 1)."""
    stages: list[StageResult] = field(default_factory=list)
    score: float = 1.0
    """Detection score (1.0 for user boxes and the whole image)."""
    track_id: int | None = None
    """Video: the person's id over the frames (None for photos)."""

    @property
    def final(self) -> StageResult:
        """The last stage."""
        return self.stages[-1]

    @property
    def pose_3d(self) -> np.ndarray:
        """(J3, 3) final 3D pose (best component of the last stage); NaN when not lifted."""
        fit = self.final.fit
        if fit is None:
            return np.full((H36M17.num_joints, 3), np.nan)
        return np.asarray(fit.pose_3d[0])

    @property
    def implausible(self) -> bool:
        """The final lifting was judged not believable (lifted, ``plausible`` False; see
        ``poseviewer.lifting.plausibility``); False when not lifted or not judged."""
        fit = self.final.fit if self.stages else None
        if fit is None or fit.plausible is None:
            return False
        return bool(np.asarray(fit.lifted)[0]) and not bool(np.asarray(fit.plausible)[0])


#: Every key of ``EstimateResult.timings`` (seconds) and what it measures; a result holds the
#: phases that ran.
TIMINGS: dict[str, str] = {
    "load": "reading and decoding the image (and downscaling a large one)",
    "detect": "finding the people (the detector or PersonNet)",
    "preprocess": "cutting and normalising the crops",
    "cnn": "the network's forward pass without its per-stage lifting and fusion (in a batch, "
           "the image's share)",
    "lift": "lifting to 3D: each stage's lifting inside the network and the final fits",
    "fusion": "fusing the 3D poses' projected maps with the network's",
    "read": "reading the joints from the maps",
    "results": "building the result",
    "total": "the whole estimate, wall clock",
}


@dataclass
class EstimateResult:
    """Everything one ``Estimator.estimate`` call produced for one image."""

    image_size: tuple[int, int]
    """(width, height) of the original image (after EXIF rotation); every coordinate is in
    these pixels, even when the analysis ran on a downscaled copy (see ``messages``)."""
    persons: list[PersonResult]
    timings: dict[str, float]
    """Seconds per phase, keys from :data:`TIMINGS`."""
    model: dict[str, Any]
    """Model info: name, version, settings, weight files."""
    device: str
    image_path: str | None = None
    messages: list[str] = field(default_factory=list)
    """Notes for the user (e.g. 'no person found', 'image downscaled from ...')."""
    frame_3d: str = "lifting"
    """Origin of the 3D poses: 'lifting' (the lifting's own frame) or 'pelvis'."""

    @property
    def num_stages(self) -> int:
        """Number of CNN stages (0 when nobody was found)."""
        return len(self.persons[0].stages) if self.persons else 0

    def root_relative(self) -> EstimateResult:
        """A copy whose 3D poses have the pelvis at the origin (``frame_3d = 'pelvis'``);
        2D joints, maps and scores are shared, not copied."""
        if self.frame_3d == "pelvis":
            return self
        persons = [dataclasses.replace(p, stages=[
            dataclasses.replace(s, fit=None if s.fit is None else s.fit.root_relative())
            for s in p.stages]) for p in self.persons]
        return dataclasses.replace(self, persons=persons, frame_3d="pelvis")


@dataclass
class ResultSequence:
    """Per-frame results of a sequence (a video): frame i is ``frames[i]``; its fields
    :data:`FRAME_FIELDS` are ``indices[i]`` and ``times[i]``; people carry ``track_id``."""

    frames: list[EstimateResult] = field(default_factory=list)
    times: list[float] | None = None
    """Seconds from the start of each frame, or None (frame index only)."""
    source: str | None = None
    indices: list[int] | None = None
    """Frame number of each frame in the source (None: 0, 1, 2, ...)."""
    fps: float | None = None
    """The source's nominal frame rate (frames per second), when known."""
    smoothing: dict[str, Any] | None = None
    """The temporal filter's parameters (None: no smoothing)."""
    messages: list[str] = field(default_factory=list)
    """Notes about the whole sequence (e.g. frames that could not be decoded)."""

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> EstimateResult:
        return self.frames[i]

    def __iter__(self) -> Iterator[EstimateResult]:
        return iter(self.frames)

    @classmethod
    def of(cls, frames: Sequence[EstimateResult], **kw: Any) -> ResultSequence:
        """A sequence of the given results."""
        return cls(frames=list(frames), **kw)

    def frame_index(self, i: int) -> int:
        """Frame number of frame ``i`` in the source."""
        return int(self.indices[i]) if self.indices is not None else int(i)

    def frame_time(self, i: int) -> float:
        """Time of frame ``i`` in seconds (from ``times``, else the index and ``fps``; NaN
        when neither is known)."""
        if self.times is not None:
            return float(self.times[i])
        if self.fps:
            return self.frame_index(i) / float(self.fps)
        return float("nan")

    def track_ids(self) -> list[int]:
        """The person ids that occur, ascending."""
        return sorted({int(p.track_id) for r in self.frames for p in r.persons
                       if p.track_id is not None})


# ---- the table as documentation -------------------------------------------------------------
def field_table_markdown() -> str:
    """The field table as the Markdown block of docs/export-format.md (``python -m
    poseviewer.result`` prints it)."""

    def shape(s: FieldSpec, lead: str) -> str:
        dims = ", ".join([lead, *(str(d) for d in s.shape)]) if lead else \
            ", ".join(str(d) for d in s.shape)
        return f"({dims})"

    lines = ["| level | field | JSON key | NPZ key (shape) | dtype | unit | frame | meaning |",
             "|---|---|---|---|---|---|---|---|"]
    for level, specs, lead in (("person", PERSON_FIELDS, "P"), ("stage", STAGE_FIELDS, "P, T"),
                               ("fit", FIT_FIELDS, "P, T"),
                               ("component", COMPONENT_FIELDS, "P, T"),
                               ("frame", FRAME_FIELDS, "N"), ("track", TRACK_FIELDS, "R")):
        for s in specs:
            opt = " (optional)" if s.optional else ""
            lines.append(f"| {level} | `{s.name}`{opt} | `{s.json_key}` | "
                         f"`{s.npz_key}` {shape(s, lead)} | {s.dtype} | {s.unit} | "
                         f"{s.frame} | {s.description} |")
    lines.append("")
    lines.append("Shape symbols: " + "; ".join(f"`{k}` {v}" for k, v in SHAPE_SYMBOLS.items())
                 + ". JSON holds one person/stage at a time (no `P, T`); a component's "
                 "fields are one entry of `components` each (no `K`). A video's NPZ puts "
                 "the `N` frames first on every per-image key (`N, P, ...`, people padded); "
                 "its JSON holds one such document per frame and one entry per person id in "
                 "`tracks` (NPZ: `R` ids, `F` padded to the longest, `track_frames` = -1 "
                 "past a track's end).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(field_table_markdown(), end="")
