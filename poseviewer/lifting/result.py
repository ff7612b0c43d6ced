"""The result of lifting a batch of people: ``LiftResult`` with every component's fit
(numpy arrays)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from poseviewer.result import SCALE_CAP


def _take(x: np.ndarray | None, idx: Any) -> np.ndarray | None:
    return None if x is None else x[np.asarray(idx)]


def _index(idx: Any, n: int) -> Any:
    """Normalise an int / slice / index array to something that keeps the leading dim."""
    if isinstance(idx, (int, np.integer)):
        if not -n <= int(idx) < n:
            raise IndexError(f"person index {idx} out of range for {n} people")
        return [int(idx)]
    if isinstance(idx, slice):
        return list(range(n))[idx]
    if hasattr(idx, "detach"):  # a torch tensor
        idx = idx.detach().cpu().numpy()
    idx = np.asarray(idx)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean person mask must have shape ({n},), got {idx.shape}")
        return np.flatnonzero(idx)
    return idx.astype(np.int64)


def ellipsoid_d2(level: float, dof: Any) -> np.ndarray:
    """Squared radius, in the metric of a joint covariance (``joint_cov``), of the ellipsoid
    that holds ``level`` of a 3D Student-t with ``dof`` degrees of freedom (any shape;
    inf: the Gaussian's chi-square quantile): 3 F^-1(level; 3, dof) (dof - 2) / dof."""
    from scipy.stats import chi2, f

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    nu = np.asarray(dof, dtype=np.float64)
    fin = np.isfinite(nu) & (nu > 2.0)
    out = np.full(nu.shape, float(chi2.ppf(level, 3)))
    out[fin] = 3.0 * f.ppf(level, 3, nu[fin]) * (nu[fin] - 2.0) / nu[fin]
    out[np.isnan(nu)] = np.nan
    return out


@dataclass
class ComponentFits:
    """Every mixture component's fit, leading dims (N, K)."""

    pose_3d: np.ndarray
    """(N, K, 17, 3) reconstruction under each component (step 5), H36M-17, "mm"."""
    score: np.ndarray
    """(N, K) residual + log-det x scale^2 (step 4); the best component minimises it."""
    residual: np.ndarray
    """(N, K) least-squares residual at the chosen yaw, halved (step 2)."""
    scale: np.ndarray
    """(N, K) the scale a_0 (negative; exactly -0.001 where capped, step 3)."""
    yaw: np.ndarray
    """(N, K) chosen yaw theta* in radians (2 pi j / 100)."""
    coeffs: np.ndarray
    """(N, K, 3 + B) c_1 .. c_{3+B} (translations then basis), divided by the scale."""
    joints_2d: np.ndarray
    """(N, K, 17, 2) each component's fit projected back into the image, (x, y) pixels."""
    joint_cov: np.ndarray
    """(N, K, 17, 3, 3) posterior covariance of every joint (mm^2, the output frame) of the
    pose relative to its joint centroid, given the component's angle and scale
    (``covariance.joint_cov`` with the noise the fit's own residual gives,
    ``covariance.fit_noise``; times ``PoseModel3D.cov_scale``)."""
    joint_cov_dof: np.ndarray
    """(N, K) degrees of freedom of that posterior, a Student-t (``covariance.fit_noise``): its
    level-p ellipsoid is d^2 <= ``ellipsoid_d2(p, dof)`` in the covariance's metric."""
    elevation: np.ndarray | None = None
    """(N, K) the camera's elevation chosen with the yaw, radians (positive: the camera
    looks down on the person; 0 for the release's yaw-only fit, ``release_exact``)."""
    shift: np.ndarray | None = None
    """(N, K) the fit's vertical image shift beyond what the model's translations give, in
    the normalised units of step 1 (the elevation grid fits one at the level camera,
    where E_1..E_3 move the image horizontally only; 0 otherwise): ``PoseModel3D.project``
    adds it."""

    @property
    def capped(self) -> np.ndarray:
        """(N, K) bool: the scale was capped and the component refitted (step 3); only in
        the release-exact mode does such a pose carry the release's depth shift."""
        return self.scale == SCALE_CAP


@dataclass
class LiftResult:
    """Lifting of N people (numpy: float64, ``component`` int64, ``lifted`` bool)."""

    pose_3d: np.ndarray
    """(N, 17, 3) best component's 3D pose, H36M-17, x right, y depth, z up, "mm"."""
    component: np.ndarray
    """(N,) int64 best component index (0 where not lifted)."""
    lifted: np.ndarray
    """(N,) bool; False (and NaN outputs) where fewer than 5 joints are visible."""
    joints_2d: np.ndarray
    """(N, 17, 2) best component's pose projected back into the image, (x, y) pixels."""
    components: ComponentFits
    """Every component's fit."""
    centre: np.ndarray
    """(N, 2) mean of the visible input joints (x, y) pixels (normalisation, step 1)."""
    norm: np.ndarray
    """(N,) the normalisation m = (min y - max y) / 2 of step 1 (pixels, negative)."""
    joint_cov: np.ndarray
    """(N, 17, 3, 3) the best component's ``components.joint_cov`` (mm^2)."""
    joint_cov_dof: np.ndarray
    """(N,) the best component's ``components.joint_cov_dof``."""
    elevation: np.ndarray | None = None
    """(N,) the best component's ``components.elevation`` (radians)."""

    def __len__(self) -> int:
        return int(self.lifted.shape[0])

    def select(self, idx: Any) -> LiftResult:
        """The people ``idx`` (int, slice, index or bool array), keeping the leading N dim."""
        ii = _index(idx, len(self))
        comps = ComponentFits(
            **{f.name: _take(getattr(self.components, f.name), ii)
               for f in fields(ComponentFits)})
        kw = {f.name: _take(getattr(self, f.name), ii)
              for f in fields(LiftResult) if f.name != "components"}
        return LiftResult(components=comps, **kw)

    def __getitem__(self, idx: Any) -> LiftResult:
        return self.select(idx)
