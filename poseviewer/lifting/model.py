"""``PoseModel3D``: the mixture-of-PPCA 3D pose model and its batched lifting."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from poseviewer.atomic import atomic_write_bytes
from poseviewer.lifting import fast, operators, solve
from poseviewer.lifting.result import ComponentFits, LiftResult
from poseviewer.result import SCALE_CAP
from poseviewer.skeleton import CPM14, CPM_TO_H36M_SLOTS, CPM_TO_H36M_SOURCES, H36M17
from poseviewer.threads import torch_threads

#: Joints of the 3D model (H36M-17) and of the 2D input (CPM-14).
NUM_JOINTS_3D = H36M17.num_joints
NUM_JOINTS_2D = CPM14.num_joints
#: Camera of the spec: the image shows (X, -Z).
CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
#: Our file format marker (safetensors metadata "format").
FILE_FORMAT = "poseviewer.pose_model_3d"
FILE_VERSION = "1"

_ORDER = np.argsort(CPM_TO_H36M_SLOTS)
#: Observed H36M slots (ascending) and the CPM joint each one takes.
OBS_SLOTS = CPM_TO_H36M_SLOTS[_ORDER]
OBS_SOURCES = CPM_TO_H36M_SOURCES[_ORDER]
_BONES = np.array(H36M17.bones, dtype=np.int64)
#: The H36M head (where the CPM head top is observed) and the neck/nose below it.
HEAD_SLOT = H36M17.index("head")
NECK_SLOT = H36M17.index("neck_nose")


def _bone_matrix() -> np.ndarray:
    """(17, 16): joint rows -> bone vectors (child - parent) by one matrix product."""
    b = np.zeros((NUM_JOINTS_3D, len(_BONES)))
    b[_BONES[:, 1], np.arange(len(_BONES))] = 1.0
    b[_BONES[:, 0], np.arange(len(_BONES))] -= 1.0
    return b


def rotated_basis(mu: np.ndarray, ext: np.ndarray, sin: np.ndarray, cos: np.ndarray
                  ) -> np.ndarray:
    """(K, A, 4 + B, 51) per component and angle: coefficients a = (a_0 = scale, a_1..)
    -> the spec's step-5.1 pose U(theta)^T (mu a_0 + sum_i a_i E_i), rows x, y, z of 17
    joints flattened; with a_0 < 0 (always after step 3's cap) this is
    U^T (mu + sum c_i E_i) (-|s|), c = a / a_0: one matrix product per person."""
    k = mu.shape[0]
    m = np.concatenate([mu.reshape(k, 1, -1), ext], axis=1)  # (K, 4 + B, 51)
    j = NUM_JOINTS_3D
    mx, my, mz = m[..., :j], m[..., j:2 * j], m[..., 2 * j:]
    s, c = sin[None, :, None, None], cos[None, :, None, None]
    out = np.empty((k, len(sin)) + m.shape[1:])
    out[..., :j] = s * mx[:, None] + c * my[:, None]
    out[..., j:2 * j] = -c * mx[:, None] + s * my[:, None]
    out[..., 2 * j:] = mz[:, None]
    return out


class ModelFileError(ValueError):
    """A 3D pose model file is unreadable, truncated or holds the wrong keys or shapes."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """A 3D pose model file does not exist."""


def _as_f64(x: Any, name: str) -> Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype=torch.float64, device="cpu").clone().contiguous()
    try:
        return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"PoseModel3D: {name} is not a numeric array ({exc})") from None


class PoseModel3D:
    """Mixture of K probabilistic PCA models of H36M-17 3D poses (the paper's 3D model).

    ``mu`` (K, 3, 17) mean poses (rows x, y, z; millimetres, z up), ``e`` (K, B, 3, 17)
    orthonormal bases, ``sigma`` (K, B + 1): basis regulariser weights then the data
    weight. ``meta`` is free-form JSON-able information (name, source, training options)
    saved with the model.

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
            if not torch.isfinite(t).all():
                raise ValueError(f"PoseModel3D: {name} holds NaN or infinite values")
        if not (s_t > 0).all():
            raise ValueError("PoseModel3D: sigma must be positive")
        flat = e_t.reshape(k, b, -1)
        gram = flat @ flat.mT
        err = (gram - torch.eye(b, dtype=torch.float64)).abs().amax().item()
        if err > 1e-6:
            raise ValueError(
                f"PoseModel3D: the basis e is not orthonormal (max |e e^T - I| = {err:.2e})")
        self.meta: dict[str, Any] = dict(meta or {})
        #: CPU threads ``lift`` uses (None: torch's setting). The lifting is many small
        #: operations; fork/join of a thread pool costs more than it saves, and far more on
        #: a machine loaded by other work (measured: scripts/bench_lifting.py). Torch's
        #: thread count is not per thread: while ``lift`` runs it changes for the process;
        #: such lifts are serialised by one lock (see ``poseviewer.threads.torch_threads``). The
        #: operators' fast path changes it only while it prepares a pattern or solves
        #: directly (a warm lift leaves torch's threads alone: changing them right after a
        #: network's parallel forward pass can wait for the thread pool, tens of ms).
        self.lift_threads: int | None = 1
        #: Reproduce the release's capped refit exactly (see the class docstring).
        self.release_exact: bool = False
        #: How ``lift`` solves: "auto" (the cached per-pattern operators of
        #: ``operators`` on the CPU, ``direct`` elsewhere), "operators" (CPU only) or
        #: "direct" (``solve.fit_pairs`` for every call, torch on the model's device).
        #: Both give the same results (to ~1e-12 relative).
        self.lift_method: str = "auto"
        #: Visibility patterns whose operators are kept (LRU; ~8 MB each for K = 3).
        self.pattern_cache = operators.PatternCache(16)
        #: An uncached pattern is prepared (~10-30 ms) once this many people with it have
        #: been met (this call and earlier ones); until then it is solved directly (about
        #: 0.4-0.9 ms a person on the CPU: preparing pays off after some 30 people).
        self.build_min: int = 32
        #: Factor on the posterior joint covariances (``fit.joint_cov``); 1 = the raw
        #: posterior. A calibration factor fitted on held-out data can be kept in the
        #: model's ``meta["joint_cov_scale"]`` (read here).
        self.cov_scale: float = float(self.meta.get("joint_cov_scale", 1.0))
        #: Camera elevations (degrees) searched with the yaws (``elevation``); (0.0,) is
        #: the release's yaw-only fit (the default, and what ``release_exact`` always
        #: uses); ``elevation_search = True`` sets the grid ``solve.ELEVATIONS_DEG``.
        self.elevations: tuple[float, ...] = solve.LEVEL
        #: The elevation prior: non-level rotations' residuals times 1 + this.
        self.elevation_spike: float = solve.ELEVATION_SPIKE
        self._grid_cache: tuple[Any, Any] | None = None
        #: The elevation grid's observation of the CPM head top: head + this x (head -
        #: neck/nose) (``solve.HEAD_TOP_OFFSET``; a model's ``meta["head_top_offset"]``
        #: overrides it). The yaw-only fit observes the head itself, as the release.
        self.head_top_offset: float = float(self.meta.get("head_top_offset",
                                                          solve.HEAD_TOP_OFFSET))
        self._obs_cache: tuple[float, dict[str, np.ndarray]] | None = None
        self._device = torch.device("cpu")
        self._set(mu_t, e_t, s_t)

    # ------------------------------------------------------------------ construction / io
    def _set(self, mu: Tensor, e: Tensor, sigma: Tensor) -> None:
        self.mu, self.e, self.sigma = mu, e, sigma
        k, b = e.shape[:2]
        obs = torch.as_tensor(OBS_SLOTS, device=mu.device)
        lam = sigma[:, b]
        self._lam = lam
        self._rho = (solve.SIGMA_FACTOR * sigma[:, :b] / lam[:, None]) ** 2
        self._ex = e[:, :, 0, obs].mT.contiguous()  # (K, J, B)
        self._ey = e[:, :, 1, obs].mT.contiguous()
        self._ez = e[:, :, 2, obs].mT.contiguous()
        self._mux, self._muy, self._muz = (mu[:, r, obs].contiguous() for r in range(3))
        ext = torch.zeros(k, 3 + b, 3, NUM_JOINTS_3D, dtype=torch.float64, device=mu.device)
        ext[:, 0, 0] = 1.0
        ext[:, 1, 1] = 1.0
        ext[:, 2, 0] = 1.0
        ext[:, 3:] = e
        self._ext = ext  # E_1 .. E_{3+B}
        self._lgdet = (-torch.log(sigma[:, :b])).sum(1) + (-torch.log(lam)) * (
            3 * NUM_JOINTS_3D - 3 - b)
        self._theta, self._sin, self._cos = solve.angles(mu.device)
        self._obs = obs
        self._bones = torch.as_tensor(_BONES, device=mu.device)
        self._np = {
            "mu": mu.cpu().numpy(), "ext": ext.reshape(k, 3 + b, -1).cpu().numpy(),
            "lgdet": self._lgdet.cpu().numpy(), "theta": self._theta.cpu().numpy(),
            "sin": self._sin.cpu().numpy(), "cos": self._cos.cpu().numpy(),
            "bone_matrix": _bone_matrix()}
        self._np.update({name: t.cpu().numpy() for name, t in (
            ("ex", self._ex), ("ey", self._ey), ("ez", self._ez), ("mux", self._mux),
            ("muy", self._muy), ("muz", self._muz), ("rho", self._rho), ("lam", lam),
            ("e", e), ("obs", obs))})
        self._np["koff"] = np.arange(k) * solve.NUM_ANGLES  # flat (component, angle)
        mrot = rotated_basis(self._np["mu"], self._np["ext"], self._np["sin"], self._np["cos"])
        self._np["mrot"] = mrot.reshape((-1,) + mrot.shape[2:])  # (K A, 4 + B, 51), koff
        self._np["xy_index"] = np.concatenate([2 * OBS_SOURCES, 2 * OBS_SOURCES + 1])
        if hasattr(self, "pattern_cache"):
            self.pattern_cache.clear()

    @property
    def num_components(self) -> int:
        """K, the number of mixture components."""
        return int(self.mu.shape[0])

    @property
    def num_basis(self) -> int:
        """B, basis vectors per component."""
        return int(self.e.shape[1])

    @property
    def device(self) -> torch.device:
        """Where the parameters live and ``lift`` solves."""
        return self._device

    def to(self, device: torch.device | str) -> PoseModel3D:
        """Move the model to ``device`` (in place; returns self)."""
        dev = torch.device(device)
        self._device = dev
        self._set(self.mu.to(dev), self.e.to(dev), self.sigma.to(dev))
        return self

    def __repr__(self) -> str:
        name = self.meta.get("name", "unnamed")
        return (f"PoseModel3D({name!r}, K={self.num_components}, B={self.num_basis}, "
                f"device={self.device})")

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
        from safetensors.torch import save

        p = Path(path)
        tensors = {"mu": self.mu.cpu().contiguous(), "e": self.e.cpu().contiguous(),
                   "sigma": self.sigma.cpu().contiguous()}
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
            with safe_open(str(p), framework="pt") as fh:
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
    def _inputs(self, joints_2d: Any, visible: Any) -> tuple[Tensor, Tensor]:
        """The checked inputs (``_inputs_np``) as float64 / bool tensors on the model's
        device."""
        j, vis = self._inputs_np(joints_2d, visible)
        return (torch.as_tensor(j, device=self._device),
                torch.as_tensor(vis, device=self._device))

    def _inputs_np(self, joints_2d: Any, visible: Any) -> tuple[np.ndarray, np.ndarray]:
        """Check and convert the lifting's inputs: (N, 14, 2) float64 joints and (N, 14) bool
        visibility (0/1 integers accepted), clear ``ValueError`` messages otherwise."""
        if isinstance(joints_2d, torch.Tensor):
            joints_2d = joints_2d.detach().cpu().numpy()
        try:
            j = np.asarray(joints_2d, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"lift: joints_2d is not a numeric array ({exc})") from None
        if j.ndim != 3 or j.shape[1:] != (NUM_JOINTS_2D, 2):
            raise ValueError(
                f"lift: joints_2d must have shape (N, 14, 2) (CPM-14, x y), got {j.shape}")
        if isinstance(visible, torch.Tensor):
            visible = visible.detach().cpu().numpy()
        vis = np.asarray(visible)
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

    def _use_operators(self) -> bool:
        method = self.lift_method
        if method == "auto" and self._device.type == "cpu":
            return True
        if method not in ("auto", "operators", "direct"):
            raise ValueError(f"lift_method must be 'auto', 'operators' or 'direct', "
                             f"not {method!r}")
        if method == "operators" and self._device.type != "cpu":
            raise ValueError("lift_method 'operators' needs the model on the CPU")
        return method == "operators" or (method == "auto" and self._device.type == "cpu")

    def lift(self, joints_2d: Any, visible: Any, return_intermediates: bool = False,
             release_exact: bool | None = None, as_numpy: bool = False,
             ) -> LiftResult | tuple[LiftResult, dict[str, Tensor]]:
        """Lift CPM-14 2D joints (N, 14, 2) in image pixels (x, y) to H36M-17 3D poses.

        ``visible`` (N, 14) bool. People with fewer than 5 visible joints, or whose visible
        joints all lie on one image row (no height: the scale is undefined), come back with
        ``lifted`` False and NaN outputs. With ``return_intermediates`` also returns a dict of
        the spec's intermediate quantities (for tests and inspection). ``release_exact``
        (None: the model's ``release_exact``) True reproduces the release's capped refit
        with its depth shift; False (the default) centres capped components properly.
        ``as_numpy`` True: the result holds numpy arrays (``LiftResult.numpy()``; what
        ``poseviewer.result.Fit.from_lift`` reads, without the torch round trip), the
        intermediates stay torch.
        """
        exact = self.release_exact if release_exact is None else bool(release_exact)
        if self._use_operators() or self.elevation_grid(exact) is not None:
            # the elevation grid has one implementation, the operators' (numpy, CPU)
            j, vis = self._inputs_np(joints_2d, visible)
            return fast.lift(self, j, vis, return_intermediates, exact, as_numpy)
        j, vis = self._inputs(joints_2d, visible)
        with self.torch_threads():
            got = self._lift(j, vis, return_intermediates, exact)
        if not as_numpy:
            return got
        if isinstance(got, tuple):
            return got[0].numpy(), got[1]
        return got.numpy()

    @property
    def elevation_search(self) -> bool:
        """Whether the fit searches the camera's elevation (``elevations`` holds more than
        the level camera); setting it chooses the grid ``solve.ELEVATIONS_DEG`` or the
        release's yaw-only fit ``solve.LEVEL``."""
        return len(tuple(self.elevations)) > 1

    @elevation_search.setter
    def elevation_search(self, on: bool) -> None:
        self.elevations = solve.ELEVATIONS_DEG if on else solve.LEVEL

    def elevation_grid(self, release_exact: bool) -> tuple[np.ndarray, int] | None:
        """(elevations in radians, the level one's index) searched with the yaws, or None
        for the yaw-only fit (``release_exact``, or a grid of 0 alone)."""
        if release_exact:
            return None
        key = tuple(self.elevations)
        got = self._grid_cache
        if got is None or got[0] != key:
            grid = solve.elevation_grid(key)
            got = self._grid_cache = (key, None if len(grid[0]) == 1 else grid)
        return got[1]

    def observed_arrays(self) -> dict[str, np.ndarray]:
        """The model's numpy arrays (``_np``) with the observed slots' basis and mean rows
        (ex, ey, ez, mux, muy, muz) of the elevation grid's fit: the head slot observed as
        LSP's head top (``head_top_offset``)."""
        a = float(self.head_top_offset)
        got = self._obs_cache
        if got is None or got[0] != a:
            d = dict(self._np)
            i = int(np.flatnonzero(OBS_SLOTS == HEAD_SLOT)[0])
            mu, e = self._np["mu"], self._np["e"]  # (K, 3, 17), (K, B, 3, 17)
            for r, name in enumerate("xyz"):
                base = d["e" + name].copy()
                base[:, i] = (1.0 + a) * e[:, :, r, HEAD_SLOT] - a * e[:, :, r, NECK_SLOT]
                d["e" + name] = base
                m = d["mu" + name].copy()
                m[:, i] = (1.0 + a) * mu[:, r, HEAD_SLOT] - a * mu[:, r, NECK_SLOT]
                d["mu" + name] = m
            d["head_top"] = np.array([a, float(i)])
            got = self._obs_cache = (a, d)
        return got[1]

    def torch_threads(self) -> Any:
        """Context: torch runs with ``lift_threads`` intra-op threads (see there)."""
        return torch_threads(self.lift_threads, self._device)

    def _lift(self, j: Any, vis: Any, inter: bool, release_exact: bool = False):
        """numpy inputs: the operators' fast path (``fast``); torch: the direct solver."""
        if isinstance(j, np.ndarray):
            return fast.lift(self, j, vis, inter, release_exact)
        return self._lift_direct(j, vis, inter, release_exact)

    def _lift_direct(self, j: Tensor, vis: Tensor, inter: bool, release_exact: bool = False):
        dev, f64 = self._device, torch.float64
        n_people, k = j.shape[0], self.num_components
        obs_src = torch.as_tensor(OBS_SOURCES, device=dev)
        w = j[:, obs_src, :]  # (N, 14, 2) in observed-slot order
        v = vis[:, obs_src]
        lifted = v.sum(-1) >= solve.MIN_VISIBLE
        # All visible joints on one image row: the step-1 scale (half the height) is 0 and
        # the pose size undefined. Not lifted, rather than a pose at an arbitrary scale.
        big = torch.finfo(f64).max
        y = w[..., 1]
        height = (torch.where(v, y, torch.full_like(y, -big)).amax(-1)
                  - torch.where(v, y, torch.full_like(y, big)).amin(-1))
        lifted = lifted & (height > 0)
        # People who cannot be lifted: solve a harmless dummy, NaN the outputs afterwards.
        v = torch.where(lifted[:, None], v, torch.ones_like(v))
        vf = v.to(f64)
        w = torch.where(v[..., None] & lifted[:, None, None], w, torch.zeros_like(w))
        nv = vf.sum(-1)
        centre = (w * vf[..., None]).sum(1) / nv[:, None]
        y = w[..., 1]
        ymin = torch.where(v, y, torch.full_like(y, big)).amin(-1)
        ymax = torch.where(v, y, torch.full_like(y, -big)).amax(-1)
        m = (ymin - ymax) / 2
        m = torch.where(m == 0, torch.ones_like(m), m)  # only the dummies of unlifted people
        wn = torch.where(v[..., None], (w - centre[:, None, :]) / m[:, None, None],
                         torch.zeros_like(w))  # (N, 14, 2)

        # Step 2 for every (person, component) pair.
        def gather(pn: Tensor, pk: Tensor) -> list[Tensor]:
            return [wn[pn, :, 0], wn[pn, :, 1], vf[pn], self._ex[pk], self._ey[pk], self._ez[pk],
                    self._mux[pk], self._muy[pk], self._muz[pk], self._rho[pk], self._lam[pk]]

        pn = torch.arange(n_people, device=dev).repeat_interleave(k)
        pk = torch.arange(k, device=dev).repeat(n_people)
        fit = solve.fit_pairs(*gather(pn, pk), self._sin, self._cos)
        coeffs, res, ang = fit.coeffs, fit.residual, fit.angle
        residuals = fit.residuals
        # Step 3: refit the components whose scale exceeds the cap.
        capped = coeffs[:, 0] > SCALE_CAP
        if capped.any():
            idx = capped.nonzero()[:, 0]
            cf = solve.fit_pairs(*gather(pn[idx], pk[idx]), self._sin, self._cos,
                                 cap=SCALE_CAP, release_exact=release_exact)
            coeffs, res, ang = coeffs.clone(), res.clone(), ang.clone()
            residuals = residuals.clone()
            coeffs[idx], res[idx], ang[idx], residuals[idx] = (
                cf.coeffs, cf.residual, cf.angle, cf.residuals)
        scale = coeffs[:, 0].view(n_people, k)
        c = (coeffs[:, 1:] / coeffs[:, :1]).view(n_people, k, coeffs.shape[1] - 1)
        residual = (res / 2).view(n_people, k)
        ang = ang.view(n_people, k)
        # Step 4.
        score = residual + self._lgdet[None, :] * scale * scale
        best = torch.argmin(score, dim=1)
        best = torch.where(lifted, best, torch.zeros_like(best))  # 0 where not lifted
        # Step 5 for every component.
        theta = self._theta[ang]
        rec_model = self._model_pose(scale, theta, c)  # (N, K, 3, 17)
        xy = rec_model[:, :, 1]
        # Projection (first two rows of C X): (X_x, -X_z), normalised -> image pixels.
        proj_n = torch.stack([rec_model[:, :, 0], -rec_model[:, :, 2]], dim=-1)  # (N,K,17,2)
        joints_img = proj_n * m[:, None, None, None] + centre[:, None, None, :]
        # Blend with the observation on the visible joints.
        w17 = torch.zeros(n_people, NUM_JOINTS_3D, 2, dtype=f64, device=dev)
        w17[:, self._obs] = wn
        v17 = torch.zeros(n_people, NUM_JOINTS_3D, dtype=torch.bool, device=dev)
        v17[:, self._obs] = v
        blend = (proj_n + solve.BLEND_WEIGHT * w17[:, None]) / (1.0 + solve.BLEND_WEIGHT)
        yb = torch.where(v17[:, None, :, None], blend, proj_n)  # rows 0, 1 of Y = C X
        # X = -(C^T Y), Y = (Y0, Y1, X_y): X = (-Y0, -X_y, Y1)
        rec_blend = torch.stack([-yb[..., 0], -xy, yb[..., 1]], dim=2)
        bones = rec_blend[..., self._bones[:, 1]] - rec_blend[..., self._bones[:, 0]]
        size = torch.sqrt((bones * bones).sum((-1, -2)))[..., None, None]
        rec_renorm = rec_blend / size * 0.97
        pose = rec_renorm * (solve.OUTPUT_SIZE / 0.97)
        pose_3d = pose.mT  # (N, K, 17, 3)

        nan = torch.tensor(math.nan, dtype=f64, device=dev)
        keep = lifted

        def mask(x: Tensor) -> Tensor:
            return torch.where(keep.view(-1, *([1] * (x.ndim - 1))), x, nan)

        # Posterior joint covariances: model mm -> output mm (scale x size factor).
        cov, fitted = operators.joint_cov(
            self._ex, self._ey, self._ez, self.e, self._rho, self._lam, self._sin, self._cos,
            v.repeat_interleave(k, 0), self._obs, pk, ang.reshape(-1), fitted=True)
        cov = cov.view(n_people, k, NUM_JOINTS_3D, 3, 3)
        f = solve.OUTPUT_SIZE / size[..., 0, 0] * scale
        # the noise from the fit's own residual: its projection against the visible joints
        rss = (((proj_n - w17[:, None]) ** 2).sum(-1) * v17[:, None]).sum(-1)  # (N, K)
        noise, dof = solve.fit_noise(rss, 2.0 * vf.sum(-1)[:, None], fitted.view(n_people, k),
                                     self._lam, scale)
        jcov = cov * (self.cov_scale * f * f * noise)[..., None, None, None]
        comps = ComponentFits(
            pose_3d=mask(pose_3d), score=mask(score), residual=mask(residual),
            scale=mask(scale), yaw=mask(theta), coeffs=mask(c), joints_2d=mask(joints_img),
            joint_cov=mask(jcov), joint_cov_dof=mask(dof), elevation=mask(torch.zeros_like(
                scale)), shift=mask(torch.zeros_like(scale)))
        ar = torch.arange(n_people, device=dev)
        result = LiftResult(
            pose_3d=comps.pose_3d[ar, best], component=best, lifted=lifted,
            joints_2d=comps.joints_2d[ar, best], components=comps,
            centre=mask(centre), norm=mask(m), joint_cov=comps.joint_cov[ar, best],
            joint_cov_dof=comps.joint_cov_dof[ar, best], elevation=comps.elevation[ar, best])
        if not inter:
            return result
        norm_pose = torch.zeros(n_people, 2, NUM_JOINTS_3D, dtype=f64, device=dev)
        norm_pose[:, :, self._obs] = wn.mT
        extra = {
            "transformed_xy": j[:, obs_src, :], "weights": v17 & lifted[:, None],
            "norm_pose": mask(norm_pose), "m": mask(m), "centre": mask(centre),
            "residuals": mask(residuals.view(n_people, k, solve.NUM_ANGLES)), "angle": ang,
            "sincos": mask(torch.stack([torch.sin(theta), torch.cos(theta)], -1)),
            "rec_model": mask(rec_model), "rec_blend": mask(rec_blend),
            "rec_renorm": mask(rec_renorm), "pose_3d": mask(pose), "capped": capped.view(
                n_people, k),
        }
        return result, extra

    def _model_pose(self, scale: Tensor, theta: Tensor, c: Tensor) -> Tensor:
        """Step 5.1: X = U(theta)^T (mu + sum c_i E_i) (-|s|), (N, K, 3, 17)."""
        x0 = self.mu[None] + torch.einsum("nki,kiab->nkab", c, self._ext)
        s, co = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
        a = -scale.abs()[..., None]
        xx = (s * x0[:, :, 0] + co * x0[:, :, 1]) * a
        xy = (-co * x0[:, :, 0] + s * x0[:, :, 1]) * a
        return torch.stack([xx, xy, x0[:, :, 2] * a], dim=2)

    def project(self, fit: LiftResult) -> Tensor:
        """(N, K, 17, 2) every component's fit projected into the image (x, y) pixels.

        Recomputed from the fit's scale, yaw and coefficients (spec: "Projecting a lifted
        pose back"), so it also works on ``fit.numpy()`` or a ``select``-ed subset; equals
        ``fit.components.joints_2d``.
        """
        def t(x: Any) -> Tensor:
            return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x,
                                   dtype=torch.float64, device=self._device)

        comps = fit.components
        x = self._model_pose(t(comps.scale), t(comps.yaw), t(comps.coeffs))
        el = getattr(comps, "elevation", None)
        el = torch.zeros_like(x[:, :, 0, :1]) if el is None else t(el)[..., None]
        # image y = -(sin e X_y + cos e X_z): a camera tilted by the fit's elevation
        proj = torch.stack([x[:, :, 0], -(torch.sin(el) * x[:, :, 1]
                                          + torch.cos(el) * x[:, :, 2])], dim=-1)
        shift = getattr(comps, "shift", None)
        if shift is not None:
            proj[..., 1] += t(shift)[..., None]
        return proj * t(fit.norm)[:, None, None, None] + t(fit.centre)[:, None, None, :]
