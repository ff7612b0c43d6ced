"""The person's own camera ray: 2D joints re-projected into a virtual camera (numpy only).

The lifting's fit is orthographic: it takes the image as a scaled parallel projection
along the optical axis. A person away from the image centre is seen by a perspective
camera along another ray, and with an elevated camera the perspective makes them look
rolled and sheared, which the orthographic fit cannot explain. Here each person's 2D joints
are moved into the image of a *virtual camera* at the same centre of projection that
looks along the person's ray, with its x axis level (perpendicular to the world vertical,
as far as it is known), and the fit's 2D outputs are moved back for drawing over the photo.

- **The camera.** A pinhole with focal length ``f`` from a field of view across the
  image's longer side (``focal_length``), the principal point at the image centre, no
  distortion. ``fov_deg`` 0 (or None) means orthographic: nothing is re-projected (the
  release's behaviour).
- **The person's ray** goes through the mean of their visible joints (the lifting's own
  step-1 centre: available for every person, also without a box, and where the fit
  centres the pose).
- **Level.** The world vertical in camera coordinates (x right, y down, z forward) of a
  camera tilted down by ``elevation`` is u = (0, -cos e, -sin e); the virtual camera has
  z_v = the ray, x_v = z_v x u normalised (level, pointing right), y_v = z_v x x_v.
  ``lift_along_rays`` takes the camera as level, or, when the 3D model searches the
  elevation, levels the virtual camera for each elevation of its grid in turn and keeps
  per person the best-scoring fit.
- **Virtual pixels.** A ray r = K^-1 (x, y, 1) is rotated, v = R r, and drawn at
  ``anchor + f (v_x, v_y) / v_z`` where ``anchor`` is the person's centre pixel: the
  person's ray maps to the anchor (the virtual image's centre), and a person at the
  principal point is not moved at all. The fit is invariant to the anchor and the
  scale; keeping them makes the fit's centre and size read as pixels near the person.

The 3D pose the fit gives is in the virtual camera's frame: upright (z up) and seen along
the person's ray (its x axis is turned about the vertical by the ray's azimuth against the
photo's x axis); the fit's elevation is the ray's. The moved-back fit's ``joints_2d`` are
exact; ``PoseModel3D.project`` of such a fit, which scales by ``norm`` about ``centre``,
is only the virtual image's projection moved by a similarity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from poseviewer.result import COMPONENT_FIELDS, FIT_FIELDS

#: Default field of view across the image's longer side, degrees (chosen by
#: ``scripts/eval_camera_ray.py``; docs/lifting.md). 0: orthographic (no re-projection).
DEFAULT_FOV_DEG = 50.0
#: Rays closer than this (cosine) to the vertical have no level x axis: the photo's x
#: axis is used instead.
_VERTICAL_COS = 1.0 - 1e-9


def check_fov(fov_deg: float | None) -> float:
    """A field of view (degrees) as a float: 0 (or None) for orthographic, else strictly
    between 0 and 180; anything else raises ValueError."""
    try:
        fov = 0.0 if fov_deg is None else float(fov_deg)
    except (TypeError, ValueError):
        raise ValueError(f"the field of view must be a number of degrees, got {fov_deg!r}"
                         ) from None
    if fov != 0.0 and not 0.0 < fov < 180.0:
        raise ValueError(f"the field of view must lie between 0 and 180 degrees (0: "
                         f"orthographic), got {fov_deg}")
    return fov


def focal_length(fov_deg: float, image_size: tuple[float, float]) -> float:
    """Focal length in pixels of a pinhole whose field of view across the image's longer
    side (``image_size`` = (width, height) pixels) is ``fov_deg`` (0 < fov < 180)."""
    fov = float(fov_deg)
    if not 0.0 < fov < 180.0:
        raise ValueError(f"the field of view must lie between 0 and 180 degrees, got {fov_deg}")
    w, h = (float(v) for v in image_size)
    if not (w > 0 and h > 0):
        raise ValueError(f"the image size must be positive, got {image_size}")
    return 0.5 * max(w, h) / np.tan(np.radians(fov) / 2.0)


def world_up(elevation: float | np.ndarray = 0.0) -> np.ndarray:
    """The world's up direction (..., 3) in the coordinates (x right, y down, z forward)
    of a camera tilted down by ``elevation`` radians."""
    e = np.asarray(elevation, dtype=np.float64)
    out = np.zeros(e.shape + (3,))
    out[..., 1], out[..., 2] = -np.cos(e), -np.sin(e)
    return out


def ray_rotation(rays: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations R whose rows are the virtual camera's axes in camera
    coordinates: R @ ray = (0, 0, |ray|) and the first row (x) perpendicular to ``up``
    (N, 3) or (3,), pointing to the photo's right."""
    z = np.asarray(rays, dtype=np.float64)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    u = np.broadcast_to(np.asarray(up, dtype=np.float64), z.shape)
    x = _cross(z, u)
    n = np.sqrt((x * x).sum(-1, keepdims=True))
    vertical = n[..., 0] < np.sqrt(1.0 - _VERTICAL_COS ** 2)
    if vertical.any():  # looking straight up or down the vertical: the photo's x axis
        ex = np.broadcast_to(np.array([1.0, 0.0, 0.0]), z.shape)
        alt = ex - (ex * z).sum(-1, keepdims=True) * z
        x = np.where(vertical[..., None], alt, x)
        n = np.sqrt((x * x).sum(-1, keepdims=True))
    x = x / n
    return np.stack([x, _cross(z, x), z], axis=-2)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b over the last axis (3) (numpy's cross costs ~20 us a call in axis moves)."""
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return out


@dataclass(frozen=True)
class RayCameras:
    """The virtual cameras of N people (see the module docstring)."""

    focal: np.ndarray
    """(N,) f, pixels (each person's photo and virtual camera)."""
    principal: np.ndarray
    """(N, 2) each person's photo's principal point (its centre), pixels."""
    rotation: np.ndarray
    """(N, 3, 3) rows: each virtual camera's x, y, z axes in the photo camera's frame."""
    anchor: np.ndarray
    """(N, 2) where each person's ray lands in both images (their centre pixel)."""

    def to_virtual(self, xy: np.ndarray) -> np.ndarray:
        """Photo pixels (N, ..., 2) -> virtual pixels (person n through camera n); a point
        on or behind the virtual camera's horizon (90 degrees from the ray) gives NaN."""
        return self._map(xy, self.principal, self.rotation, self.anchor)

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Virtual pixels (N, ..., 2) -> photo pixels (the inverse of ``to_virtual``)."""
        return self._map(xy, self.anchor, self.rotation.swapaxes(-1, -2), self.principal)

    def _map(self, xy: np.ndarray, src: np.ndarray, rot: np.ndarray, dst: np.ndarray
             ) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        flat = xy.reshape(len(xy), -1, 2)
        f = self.focal[:, None, None]
        r = np.concatenate([(flat - src[:, None]) / f, np.ones(flat.shape[:-1] + (1,))], -1)
        v = r @ rot.swapaxes(-1, -2)
        z = v[..., 2:]
        ok = z > 1e-9
        out = f * v[..., :2] / np.where(ok, z, 1.0) + dst[:, None]
        return np.where(ok, out, np.nan).reshape(xy.shape)

    def scale_at_anchor(self) -> np.ndarray:
        """(N,) the photo's length per virtual length at each anchor (the square root of
        the Jacobian determinant of ``to_image``), for moving lengths back."""
        h = 1e-3 * self.focal[:, None]
        a = self.anchor[:, None, :]
        pts = np.concatenate([a, a + np.concatenate([h, 0 * h], -1)[:, None],
                              a + np.concatenate([0 * h, h], -1)[:, None]], axis=1)
        img = self.to_image(pts)
        dx, dy = (img[:, 1] - img[:, 0]) / h, (img[:, 2] - img[:, 0]) / h
        return np.sqrt(np.abs(dx[:, 0] * dy[:, 1] - dx[:, 1] * dy[:, 0]))


def ray_cameras(centres: np.ndarray, image_size: Any, fov_deg: float,
                elevation: float | np.ndarray = 0.0) -> RayCameras:
    """The virtual cameras of people whose centres (N, 2) are photo pixels, for photos of
    ``image_size`` (width, height), one for all or (N, 2), with field of view ``fov_deg``
    across the longer side, taken by a camera tilted down by ``elevation`` radians (scalar
    or (N,); 0: level)."""
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    n = len(c)
    sizes = np.broadcast_to(np.asarray(image_size, dtype=np.float64), (n, 2))
    if not (sizes > 0).all():
        raise ValueError(f"the image size must be positive, got {image_size}")
    focal_length(fov_deg, (1, 1))  # checks the field of view
    f = 0.5 * sizes.max(-1) / np.tan(np.radians(float(fov_deg)) / 2.0)
    pp = 0.5 * sizes
    rays = np.concatenate([(c - pp) / f[:, None], np.ones((n, 1))], axis=-1)
    up = world_up(np.broadcast_to(np.asarray(elevation, dtype=np.float64), (n,)))
    return RayCameras(focal=f, principal=pp, rotation=ray_rotation(rays, up), anchor=c)


def visible_centres(joints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, 2) mean of each person's visible, finite joints (the lifting's step-1 centre);
    the mean of the finite ones where none is visible, else the origin."""
    j = np.asarray(joints, dtype=np.float64)
    fin = np.isfinite(j).all(-1)
    out = np.zeros((len(j), 2))
    for mask in (fin, fin & np.asarray(visible, dtype=bool)):
        n = mask.sum(-1)
        s = np.where(mask[..., None], j, 0.0).sum(1)
        ok = n > 0
        out[ok] = s[ok] / n[ok, None]
    return out


def _apply_affine(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N, 2, 3) affines applied to (N, ..., 2) points, person n through m[n]."""
    xy = np.asarray(xy, dtype=np.float64)
    flat = xy.reshape(len(xy), -1, 2)
    out = np.einsum("nij,nkj->nki", m[:, :, :2], flat) + m[:, None, :, 2]
    return out.reshape(xy.shape)


def _invert_affine(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[:, :, :2])
    return np.concatenate([a, -(a @ m[:, :, 2:])], axis=-1)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def move_fit(result: Any, to_frame: Any) -> Any:
    """A lifting result (``LiftResult`` of numpy arrays) with every field the result
    table marks as an image point moved through ``to_frame`` (points (N, ..., 2) -> points)
    and every image length multiplied by ``to_frame.length`` (N,) when it has one."""
    def move(obj: Any, specs: Any) -> dict[str, Any]:
        out = {}
        for f in specs:
            val = getattr(obj, f.name, None)
            if val is None or f.transform is None:
                continue
            if f.transform == "point":
                out[f.name] = to_frame.points(np.asarray(val, dtype=np.float64))
            elif f.transform == "length":
                v = np.asarray(val, dtype=np.float64)
                out[f.name] = v * to_frame.length.reshape((-1,) + (1,) * (v.ndim - 1))
        return out

    comps = dataclasses.replace(result.components, **move(result.components,
                                                          COMPONENT_FIELDS))
    return dataclasses.replace(result, components=comps, **move(result, FIT_FIELDS))


@dataclass
class _Back:
    """Virtual pixels -> the caller's frame (through the photo)."""

    cams: RayCameras
    from_image: np.ndarray | None
    length: np.ndarray

    def points(self, xy: np.ndarray) -> np.ndarray:
        img = self.cams.to_image(xy)
        return img if self.from_image is None else _apply_affine(self.from_image, img)


def elevation_candidates(model: Any) -> np.ndarray:
    """The camera elevations (radians) the virtual camera is levelled for: the model's
    elevation grid when it searches the elevation (``elevation_search``), else level."""
    if getattr(model, "elevation_search", False):
        return np.radians(np.asarray(tuple(model.elevations), dtype=np.float64))
    return np.zeros(1)


def _best_score(fit: Any) -> np.ndarray:
    """(N,) the chosen component's score in squared virtual pixels (the fit's score is in
    the units of its step-1 normalisation, which the roll of the virtual image changes),
    inf where not lifted."""
    comp = np.asarray(fit.component, dtype=np.int64)
    sc = np.take_along_axis(np.asarray(fit.components.score, dtype=np.float64),
                            comp[:, None], 1)[:, 0]
    sc = sc * np.asarray(fit.norm, dtype=np.float64) ** 2
    return np.where(np.asarray(fit.lifted, dtype=bool) & np.isfinite(sc), sc, np.inf)


def _merge(old: Any, new: Any, take: np.ndarray) -> Any:
    """Row-wise: ``new``'s people where ``take`` (N,), else ``old``'s (numpy results)."""
    def pick(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return a
        a, b = np.asarray(a), np.asarray(b)
        return np.where(take.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)

    comps = dataclasses.replace(old.components, **{
        f.name: pick(getattr(old.components, f.name), getattr(new.components, f.name))
        for f in dataclasses.fields(old.components)})
    return dataclasses.replace(old, components=comps, **{
        f.name: pick(getattr(old, f.name), getattr(new, f.name))
        for f in dataclasses.fields(old) if f.name != "components"})


def lift_along_rays(model: Any, joints: Any, visible: Any, image_size: tuple[float, float],
                    fov_deg: float | None, to_image: np.ndarray | None = None,
                    elevation: float | np.ndarray | None = None, **kwargs: Any) -> Any:
    """``model.lift(joints, visible, as_numpy=True, **kwargs)`` with every person's joints
    first re-projected into the virtual camera of their own ray (``ray_cameras``) and the
    result's 2D fields moved back into the joints' frame. ``joints`` (N, 14, 2) are in a
    frame that ``to_image`` (N, 2, 3) uniform-scale affines take to photo pixels (None:
    photo pixels); ``fov_deg`` 0 or None lifts them as they are. ``elevation``: the
    camera's tilt (radians, scalar or (N,)) when known; None: level, or, when the model
    searches the elevation, the virtual camera levelled for each elevation of its grid in
    turn, keeping per person the lift with the lowest score (its chosen component's,
    in squared virtual pixels)."""
    if not fov_deg:
        return model.lift(joints, visible, as_numpy=True, **kwargs)
    j = _numpy(joints).astype(np.float64)
    vis = _numpy(visible).astype(bool)
    if len(j) == 0:
        return model.lift(j, vis, as_numpy=True, **kwargs)
    m = None if to_image is None else np.asarray(to_image, dtype=np.float64).reshape(-1, 2, 3)
    img = j if m is None else _apply_affine(m, j)
    centres = visible_centres(img, vis)
    back = None if m is None else _invert_affine(m)
    grid = elevation_candidates(model) if elevation is None else [elevation]
    all_cams, all_virt, all_vis = [], [], []
    for e in grid:
        cams = ray_cameras(centres, image_size, fov_deg, e)
        virt = cams.to_virtual(img)
        ok = np.isfinite(virt).all(-1)
        all_cams.append(cams)
        all_virt.append(np.where(ok[..., None], virt, 0.0))
        all_vis.append(vis & ok)
    if len(grid) == 1:
        fits = [model.lift(all_virt[0], all_vis[0], as_numpy=True, **kwargs)]
    else:  # every candidate camera in one lift: a visibility pattern is met once by all
        # of its people's candidates (the fit prepares or solves it directly once)
        n = len(j)
        both = model.lift(np.concatenate(all_virt), np.concatenate(all_vis), as_numpy=True,
                          **kwargs)
        fits = [both.select(slice(i * n, (i + 1) * n)) for i in range(len(grid))]
    best = best_score = rot = None
    for cams, fit in zip(all_cams, fits, strict=True):
        if best is None:
            best, rot = fit, cams.rotation
            best_score = _best_score(fit) if len(grid) > 1 else None
        else:
            score = _best_score(fit)
            take = score < best_score
            best, best_score = _merge(best, fit, take), np.where(take, score, best_score)
            rot = np.where(take[:, None, None], cams.rotation, rot)
    cams = dataclasses.replace(cams, rotation=rot)  # each person's chosen camera
    length = cams.scale_at_anchor()
    if back is not None:
        length = length * np.abs(np.linalg.det(back[:, :, :2])) ** 0.5
    return move_fit(best, _Back(cams, back, length))


class RayLifter:
    """A 3D model whose ``lift`` re-projects along each person's ray first
    (``lift_along_rays``): for code that calls ``model.lift(joints, visible,
    as_numpy=True)`` (the network's per-stage lifting, the importer). ``to_image`` (N, 2,
    3) and ``image_size`` ((2,) or (N, 2)) describe the rows of the next call; every other
    attribute is the wrapped model's."""

    def __init__(self, model: Any, fov_deg: float | None, image_size: Any,
                 to_image: np.ndarray | None = None) -> None:
        self.__dict__.update(model=model, fov_deg=fov_deg, image_size=image_size,
                             to_image=to_image)

    def lift(self, joints: Any, visible: Any, as_numpy: bool = True, **kwargs: Any) -> Any:
        """``lift_along_rays`` of the wrapped model (numpy result)."""
        return lift_along_rays(self.model, joints, visible, self.image_size, self.fov_deg,
                               self.to_image, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["model"], name)


#: The message of a lifting that could not use the camera ray (no image size).
NO_SIZE_NOTE = ("the image size is unknown: lifted as if orthographic (every person on the "
                "optical axis; the camera ray needs the image's size)")


def imported_lifter(model: Any, fov_deg: float | None, image_size: Any
                    ) -> tuple[Any, str | None]:
    """The 3D model to lift imported 2D joints of an image of ``image_size`` with: a
    ``RayLifter`` when ``fov_deg`` is set and the size known, else ``model`` itself and,
    when the ray was wanted, a note for the result's messages."""
    if not fov_deg:
        return model, None
    if image_size is None:
        return model, NO_SIZE_NOTE
    return RayLifter(model, fov_deg, image_size), None
