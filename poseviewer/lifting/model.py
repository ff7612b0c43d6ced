"""``PoseModel3D``: the mixture-of-PPCA 3D pose model (the paper's 3D model), its files
and its ``lift``; ``load_pose_model``, the one way to get one from a path (or the default).

The parameters are held once, as read-only numpy arrays (``PoseModel3D.arrays``, a
``params.ModelArrays``, with what the fit derives from them); the lifting is numpy on the
CPU (``fit``). Torch tensors are accepted as inputs (converted at the boundary).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer import paths
from poseviewer.atomic import atomic_write_bytes
from poseviewer.errors import ModelError
from poseviewer.lifting import fit, spec
from poseviewer.lifting.cache import PatternCache
from poseviewer.lifting.params import ModelArrays
from poseviewer.lifting.result import LiftResult
from poseviewer.lifting.spec import NUM_JOINTS_2D, NUM_JOINTS_3D
from poseviewer.skeleton import CPM14

#: Our file format marker (safetensors metadata "format").
FILE_FORMAT = "poseviewer.pose_model_3d"
FILE_VERSION = "1"


class ModelFileError(ValueError):
    """A 3D pose model file is unreadable, truncated or holds the wrong keys or shapes."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """A 3D pose model file does not exist."""


def _host(x: Any) -> Any:
    """A torch tensor (any device, with or without grad) as a numpy array; else ``x``."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return x


def _as_f64(x: Any, name: str) -> np.ndarray:
    try:
        return np.array(_host(x), dtype=np.float64)  # a copy
    except (TypeError, ValueError) as exc:
        raise ValueError(f"PoseModel3D: {name} is not a numeric array ({exc})") from None


class PoseModel3D:
    """Mixture of K probabilistic PCA models of H36M-17 3D poses (the paper's 3D model).

    ``mu`` (K, 3, 17) mean poses (rows x, y, z; millimetres, z up), ``e`` (K, B, 3, 17)
    orthonormal bases, ``sigma`` (K, B + 1): basis regulariser weights then the data
    weight (numpy or torch; kept as read-only float64 numpy arrays). ``meta`` is free-form
    JSON-able information (name, source, training options) saved with the model.

    ``release_exact`` (default False) chooses the capped refit of spec step 3: False (what
    the app, the CLI and the exports use) solves it with every translation prior targeting
    0, so capped components sit near the origin like the others; True keeps the release's
    stale right-hand side (-0.003 on the row that then belongs to E_1), which shifts capped
    components tens of metres in depth and reproduces the release's output exactly (the
    reference vectors). Only capped components differ between the two modes. ``lift`` can
    override it per call.
    """

    def __init__(self, mu: Any, e: Any, sigma: Any, meta: dict[str, Any] | None = None) -> None:
        mu_t, e_t, s_t = _as_f64(mu, "mu"), _as_f64(e, "e"), _as_f64(sigma, "sigma")
        if mu_t.ndim != 3 or mu_t.shape[1:] != (3, NUM_JOINTS_3D):
            raise ValueError(f"PoseModel3D: mu must have shape (K, 3, 17), got {tuple(mu_t.shape)}")
        k = mu_t.shape[0]
        if k < 1:
            raise ValueError("PoseModel3D: the model needs at least one component")
        if e_t.ndim != 4 or e_t.shape[0] != k or e_t.shape[2:] != (3, NUM_JOINTS_3D):
            raise ValueError(
                f"PoseModel3D: e must have shape ({k}, B, 3, 17), got {tuple(e_t.shape)}")
        b = e_t.shape[1]
        if not 1 <= b <= 3 * NUM_JOINTS_3D - 3:
            raise ValueError(f"PoseModel3D: e has {b} basis vectors; expected 1..48")
        if tuple(s_t.shape) != (k, b + 1):
            raise ValueError(
                f"PoseModel3D: sigma must have shape ({k}, {b + 1}), got {tuple(s_t.shape)}")
        for name, t in (("mu", mu_t), ("e", e_t), ("sigma", s_t)):
            if not np.isfinite(t).all():
                raise ValueError(f"PoseModel3D: {name} holds NaN or infinite values")
        if not (s_t > 0).all():
            raise ValueError("PoseModel3D: sigma must be positive")
        flat = e_t.reshape(k, b, -1)
        gram = flat @ flat.swapaxes(1, 2)
        err = float(np.abs(gram - np.eye(b)).max()) if k else 0.0
        if err > 1e-6:
            raise ValueError(
                f"PoseModel3D: the basis e is not orthonormal (max |e e^T - I| = {err:.2e})")
        self.meta: dict[str, Any] = dict(meta or {})
        #: Reproduce the release's capped refit exactly (see the class docstring).
        self.release_exact: bool = False
        #: How ``lift`` solves: "auto" or "operators" (the cached per-pattern operators of
        #: ``cache``, prepared once ``build_min`` people with a pattern have been met) or
        #: "direct" (``direct.fit_pairs`` for every person; with the elevation grid
        #: ``elevation.fit_direct``). Both give the same results (to ~1e-12 relative).
        self.lift_method: str = "auto"
        #: BLAS threads of the lifting's large products (preparing a visibility pattern's
        #: operators, the residuals of 64 or more people; None: numpy's setting). The
        #: lifting is many small operations: a thread pool's fork/join costs more than it
        #: saves, and far more on a machine loaded by other work (scripts/bench_lifting.py).
        #: The count is process-wide while such a product runs (one lock serialises them,
        #: ``fit.blas_threads``); a warm yaw-only lift of fewer than 64 people leaves it
        #: alone (the elevation grid's residuals always run on these threads).
        self.lift_threads: int | None = 1
        #: Visibility patterns whose operators are kept (LRU; ~7 MB each for K = 3, ~14 MB
        #: with the elevation grid; within ``cache.CACHE_BUDGET`` bytes).
        self.pattern_cache = PatternCache(16)
        #: An uncached pattern is prepared (~10-30 ms; ~50 ms with the elevation grid)
        #: once this many people with it have been met (this call and earlier ones); until
        #: then it is solved directly (about 0.4-0.9 ms a person: preparing pays off after
        #: some 30 people; with the grid 10-20 ms a call, up to 8 people of a pattern in
        #: one solve, the same threshold).
        self.build_min: int = 32
        #: Factor on the posterior joint covariances (``fit.joint_cov``); 1 = the raw
        #: posterior. A calibration factor fitted on held-out data can be kept in the
        #: model's ``meta["joint_cov_scale"]`` (read here).
        self.cov_scale: float = float(self.meta.get("joint_cov_scale", 1.0))
        #: Camera elevations (degrees) searched with the yaws (``elevation``); (0.0,) is
        #: the release's yaw-only fit (the default, and what ``release_exact`` always
        #: uses); ``elevation_search = True`` sets the grid ``spec.ELEVATIONS_DEG``.
        self.elevations: tuple[float, ...] = spec.LEVEL
        #: The elevation prior: non-level rotations' residuals times 1 + this.
        self.elevation_spike: float = spec.ELEVATION_SPIKE
        #: The elevation grid's observation of the CPM head top: head + this x (head -
        #: thorax), beyond the head along the neck (``spec.HEAD_TOP_OFFSET``; a model's
        #: ``meta["head_top_offset"]`` overrides it). The yaw-only fit observes the head
        #: itself, as the release.
        self.head_top_offset: float = float(self.meta.get("head_top_offset",
                                                          spec.HEAD_TOP_OFFSET))
        self._grid_cache: tuple[tuple[float, ...], tuple[np.ndarray, int] | None] | None = None
        self._arrays = ModelArrays.derive(mu_t, e_t, s_t)
        self._observed = self._arrays

    # ------------------------------------------------------------------ parameters / io
    @property
    def arrays(self) -> ModelArrays:
        """The parameters and what the fit derives from them (read-only numpy)."""
        return self._arrays

    @property
    def mu(self) -> np.ndarray:
        """(K, 3, 17) mean poses (read-only float64)."""
        return self._arrays.mu

    @property
    def e(self) -> np.ndarray:
        """(K, B, 3, 17) orthonormal bases (read-only float64)."""
        return self._arrays.e

    @property
    def sigma(self) -> np.ndarray:
        """(K, B + 1) basis regulariser weights, then the data weight (read-only float64)."""
        return self._arrays.sigma

    @property
    def num_components(self) -> int:
        """K, the number of mixture components."""
        return self._arrays.num_components

    @property
    def num_basis(self) -> int:
        """B, basis vectors per component."""
        return self._arrays.num_basis

    def __repr__(self) -> str:
        name = self.meta.get("name", "unnamed")
        return f"PoseModel3D({name!r}, K={self.num_components}, B={self.num_basis})"

    @classmethod
    def from_mat(cls, path: str | os.PathLike[str], meta: dict[str, Any] | None = None
                 ) -> PoseModel3D:
        """Read the release's ``prob_model_params.mat`` (keys mu (K,51), e (K,B,51), sigma)."""
        import scipy.io

        p = Path(path)
        if not p.is_file():
            raise ModelFileNotFoundError(f"3D pose model file not found: {p}")
        try:
            mat = scipy.io.loadmat(str(p))
        except Exception as exc:  # scipy raises many types for damaged files
            raise ModelFileError(f"cannot read {p} as a MATLAB .mat file: {exc}") from None
        missing = [k for k in ("mu", "e", "sigma") if k not in mat]
        if missing:
            raise ModelFileError(f"{p}: missing key(s) {missing} (need mu, e, sigma)")
        mu, e, sigma = (np.asarray(mat[k], dtype=np.float64) for k in ("mu", "e", "sigma"))
        d = 3 * NUM_JOINTS_3D
        if mu.ndim != 2 or mu.shape[1] != d:
            raise ModelFileError(f"{p}: mu has shape {mu.shape}, expected (K, {d})")
        k = mu.shape[0]
        if e.ndim == 2 and k == 1:
            e = e[None]
        if e.ndim != 3 or e.shape[0] != k or e.shape[2] != d:
            raise ModelFileError(f"{p}: e has shape {e.shape}, expected ({k}, B, {d})")
        if sigma.ndim != 2 or sigma.shape != (k, e.shape[1] + 1):
            raise ModelFileError(
                f"{p}: sigma has shape {sigma.shape}, expected ({k}, {e.shape[1] + 1})")
        info = {"name": p.stem, "source": f"MATLAB file {p.name} (the release's format)"}
        info.update(meta or {})
        try:
            return cls(mu.reshape(k, 3, NUM_JOINTS_3D), e.reshape(k, -1, 3, NUM_JOINTS_3D),
                       sigma, meta=info)
        except ValueError as exc:
            raise ModelFileError(f"{p}: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as safetensors (+ JSON metadata), atomically."""
        from safetensors.numpy import save

        p = Path(path)
        tensors = {"mu": np.ascontiguousarray(self.mu), "e": np.ascontiguousarray(self.e),
                   "sigma": np.ascontiguousarray(self.sigma)}
        metadata = {"format": FILE_FORMAT, "version": FILE_VERSION,
                    "meta": json.dumps(self.meta, default=str)}
        data = save(tensors, metadata=metadata)
        p.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_bytes(p, data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PoseModel3D:
        """Read a model written by ``save`` (safetensors; no pickle)."""
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise ModelFileNotFoundError(f"3D pose model file not found: {p}")
        try:
            with safe_open(str(p), framework="np") as fh:
                md = fh.metadata() or {}
                keys = set(fh.keys())
                missing = {"mu", "e", "sigma"} - keys
                if missing:
                    raise ModelFileError(
                        f"{p}: missing tensor(s) {sorted(missing)} (need mu, e, sigma)")
                tensors = {k: fh.get_tensor(k) for k in ("mu", "e", "sigma")}
        except ModelFileError:
            raise
        except Exception as exc:  # safetensors raises its own errors for damaged files
            raise ModelFileError(f"cannot read {p} as a safetensors 3D pose model: {exc}") from None
        if md.get("format") != FILE_FORMAT:
            raise ModelFileError(
                f"{p}: not a poseviewer 3D pose model (format {md.get('format')!r})")
        try:
            meta = json.loads(md.get("meta", "{}"))
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{p}: metadata is not valid JSON ({exc})") from None
        try:
            return cls(tensors["mu"], tensors["e"], tensors["sigma"], meta=meta)
        except ValueError as exc:
            raise ModelFileError(f"{p}: {exc}") from None

    # ------------------------------------------------------------------ lifting
    def _inputs(self, joints_2d: Any, visible: Any) -> tuple[np.ndarray, np.ndarray]:
        """Check and convert the lifting's inputs (numpy, or torch on any device): (N, 14,
        2) float64 joints and (N, 14) bool visibility (0/1 integers accepted), clear
        ``ValueError`` messages otherwise."""
        joints_2d = _host(joints_2d)
        try:
            j = np.asarray(joints_2d, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"lift: joints_2d is not a numeric array ({exc})") from None
        if j.ndim != 3 or j.shape[1:] != (NUM_JOINTS_2D, 2):
            raise ValueError(
                f"lift: joints_2d must have shape (N, 14, 2) (CPM-14, x y), got {j.shape}")
        vis = np.asarray(_host(visible))
        if vis.shape != (j.shape[0], NUM_JOINTS_2D):
            raise ValueError(
                f"lift: visible must have shape ({j.shape[0]}, 14), got {vis.shape}")
        if vis.dtype != np.bool_:
            if vis.dtype.kind not in "iu":
                raise ValueError(f"lift: visible must be bool (or 0/1 integers), got {vis.dtype}")
            if not ((vis == 0) | (vis == 1)).all():
                raise ValueError("lift: visible holds integers other than 0 and 1")
            vis = vis != 0
        if not math.isfinite(j.sum()) and not np.isfinite(j).all():  # (the sum: cheaper)
            bad = vis & ~np.isfinite(j).all(-1)
            if bad.any():
                n, k = (int(x) for x in np.argwhere(bad)[0])
                raise ValueError(
                    f"lift: visible joint {CPM14.joints[k]} of person {n} is NaN or infinite "
                    f"({int(bad.sum())} such joint(s)); mark such joints invisible")
        return j, vis

    def lift(self, joints_2d: Any, visible: Any, return_intermediates: bool = False,
             release_exact: bool | None = None, as_numpy: bool = True,
             ) -> LiftResult | tuple[LiftResult, dict[str, np.ndarray]]:
        """Lift CPM-14 2D joints (N, 14, 2) in image pixels (x, y) to H36M-17 3D poses.

        ``visible`` (N, 14) bool. People with fewer than 5 visible joints, or whose visible
        joints all lie on one image row (no height: the scale is undefined), come back with
        ``lifted`` False and NaN outputs. With ``return_intermediates`` also returns a dict of
        the spec's intermediate quantities (for tests and inspection). ``release_exact``
        (None: the model's ``release_exact``) True reproduces the release's capped refit
        with its depth shift; False (the default) centres capped components properly.
        The result holds numpy arrays (``as_numpy`` is accepted for older callers and
        changes nothing). Inputs may be numpy arrays or torch tensors (any device).
        """
        exact = self.release_exact if release_exact is None else bool(release_exact)
        if self.lift_method not in fit.LIFT_METHODS:
            raise ValueError(f"lift_method must be one of {', '.join(fit.LIFT_METHODS)}, "
                             f"not {self.lift_method!r}")
        j, vis = self._inputs(joints_2d, visible)
        return fit.lift(self, j, vis, return_intermediates, exact)

    @property
    def elevation_search(self) -> bool:
        """Whether the fit searches the camera's elevation (``elevations`` holds more than
        the level camera); setting it chooses the grid ``spec.ELEVATIONS_DEG`` or the
        release's yaw-only fit ``spec.LEVEL``."""
        return len(tuple(self.elevations)) > 1

    @elevation_search.setter
    def elevation_search(self, on: bool) -> None:
        self.elevations = spec.ELEVATIONS_DEG if on else spec.LEVEL

    def elevation_grid(self, release_exact: bool) -> tuple[np.ndarray, int] | None:
        """(elevations in radians, the level one's index) searched with the yaws, or None
        for the yaw-only fit (``release_exact``, or a grid of 0 alone)."""
        if release_exact:
            return None
        key = tuple(self.elevations)
        got = self._grid_cache
        if got is None or got[0] != key:
            grid = spec.elevation_grid(key)
            got = self._grid_cache = (key, None if len(grid[0]) == 1 else grid)
        return got[1]

    def observed_arrays(self) -> ModelArrays:
        """``arrays`` with the observed head slot's rows as the elevation grid's fit sees
        the CPM head top (``head_top_offset``; the yaw-only fit uses ``arrays``)."""
        got = self._observed
        if got.head_top != float(self.head_top_offset):
            got = self._observed = self._arrays.with_head_top(self.head_top_offset)
        return got

    def project(self, fit: LiftResult) -> np.ndarray:
        """(N, K, 17, 2) every component's fit projected into the image (x, y) pixels.

        Recomputed from the fit's scale, yaw, coefficients, elevation and shift (spec:
        "Projecting a lifted pose back"), so it also works on a ``select``-ed subset;
        equals ``fit.components.joints_2d``.
        """
        def f64(x: Any) -> np.ndarray:
            return np.asarray(x, dtype=np.float64)

        comps = fit.components
        scale, yaw, c = f64(comps.scale), f64(comps.yaw), f64(comps.coeffs)
        a = self._arrays
        k = a.num_components
        x0 = a.mu[None] + np.einsum("nki,kiab->nkab", c, a.ext.reshape(k, -1, 3,
                                                                       NUM_JOINTS_3D))
        s, co = np.sin(yaw)[..., None], np.cos(yaw)[..., None]
        amp = -np.abs(scale)[..., None]
        xx = (s * x0[:, :, 0] + co * x0[:, :, 1]) * amp
        xy = (-co * x0[:, :, 0] + s * x0[:, :, 1]) * amp
        xz = x0[:, :, 2] * amp
        el = (np.zeros_like(scale) if comps.elevation is None else f64(comps.elevation))[
            ..., None]
        # image y = -(sin e X_y + cos e X_z): a camera tilted by the fit's elevation
        proj = np.stack([xx, -(np.sin(el) * xy + np.cos(el) * xz)], axis=-1)
        if comps.shift is not None:
            proj[..., 1] += f64(comps.shift)[..., None]
        return proj * f64(fit.norm)[:, None, None, None] + f64(fit.centre)[:, None, None, :]


class PoseModelError(ModelFileError, ModelError):
    """The 3D pose model file cannot be read (a ``ModelFileError``, a ``ModelError``)."""


class PoseModelNotFoundError(ModelFileNotFoundError, PoseModelError):
    """The 3D pose model file does not exist."""


def load_pose_model(source: str | os.PathLike[str] | PoseModel3D | None = None) -> PoseModel3D:
    """A ``PoseModel3D`` from ``source``: a path (``.mat``: the authors' released file, else
    our safetensors format), a model (returned as is) or None (the bundled
    ``pose3d_default.safetensors``). A missing file raises ``ModelFileNotFoundError`` (a
    ``FileNotFoundError``), an unreadable one ``ModelFileError``, both naming the path (and
both ``poseviewer.errors.ModelError``)."""
    if isinstance(source, PoseModel3D):
        return source
    path = Path(source) if source is not None else paths.DEFAULT_POSE_MODEL
    if not path.is_file():
        hint = "" if source is not None else (" (the bundled 3D model; train it with "
                                              "'poseviewer train-3d' or pass a model path)")
        raise PoseModelNotFoundError(f"3D pose model not found: {path}{hint}")
    try:
        if path.suffix.lower() == ".mat":
            return PoseModel3D.from_mat(path)
        return PoseModel3D.load(path)
    except ModelFileError as exc:
        raise PoseModelError(str(exc)) from exc
    except (OSError, ValueError, KeyError) as exc:
        raise PoseModelError(f"cannot load the 3D pose model {path}: {exc}") from exc
