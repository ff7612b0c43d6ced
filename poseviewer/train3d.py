"""Learn the mixture-of-PPCA 3D pose model of "Lifting from the Deep" from motion capture.

Pipeline (``train_pose_model``):

1. **Pre-processing** (``canonicalise``): every pose (N, 17, 3), H36M-17, millimetres, z up,
   is centred on its joint mean and rotated about the vertical axis so that the person
   faces +y with their right side towards +x, the orientation of the released means
   (their right-hip-minus-left-hip vector is +x, so ``cross(z, right)`` = +y). The facing
   direction is ``cross(z, (Rhip - Lhip) + (Rsho - Lsho))``. Metric scale is kept.
   Optionally (default, as the released model is mirror-symmetric to 0.1 mm) every pose
   is also added mirrored (x -> -x, left and right swapped).
2. **Mixture of PPCA** (``fit_mppca``): Tipping & Bishop's EM in the 48-dimensional
   subspace of zero-joint-mean poses (the 3 translation directions carry no variance).
   The M-step is the closed-form PPCA solution on each component's
   responsibility-weighted covariance, so the log-likelihood never decreases.
   Deterministic k-means++ initialisation from a seed.
3. **Lifting parameters** (``lifting_parameters``, ``calibrate_sigma``): per component the
   mean ``mu`` (3, 17), the orthonormal basis ``e`` (B, 3, 17) sorted by decreasing
   variance, and ``sigma`` (B + 1,).

   What the released ``sigma`` is (found by training on subjects 1, 5, 6, 7, 8 and
   comparing component by component, see ``resources/models/pose3d_default.md``):
   ``sigma[i] = 1 / sqrt(lambda_i)`` for the basis variances ``lambda_i`` (mm^2, the top
   eigenvalues of the component's covariance of metric, unscaled poses) and
   ``sigma[B] = 1 / sqrt(noise_var)``, the PPCA noise variance (mean of the discarded
   eigenvalues in the 48-dimensional zero-mean subspace, 51 - 3 - B = 23 directions: the
   lifting's log-determinant uses exactly that count). Our raw fit reproduces the released
   magnitudes within about +-30 % per matched component.

   Calibration (``calibrate_sigma``, defaults chosen on a validation split): the basis
   weights are multiplied by ``prior_factor`` and the data weight is
   ``data_factor / sqrt(pooled noise variance)``, shared by all components (why: see
   ``calibrate_sigma``). The raw values are kept in the model's metadata.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from poseviewer.skeleton import H36M17

if TYPE_CHECKING:
    from poseviewer.lifting import PoseModel3D

J = H36M17.num_joints
#: A drop of the mean log-likelihood per sample larger than this (nats) stops EM as broken.
LL_DECREASE_TOL = 1e-9
D = 3 * J
_RHIP, _LHIP = H36M17.index("right_hip"), H36M17.index("left_hip")
_RSHO, _LSHO = H36M17.index("right_shoulder"), H36M17.index("left_shoulder")

#: Default training / test subjects of Human3.6M (the usual protocol).
TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
TEST_SUBJECTS = (9, 11)


class TrainingError(ValueError):
    """The training data or options cannot produce a model (the message says why)."""


# --------------------------------------------------------------------------- preprocessing


def check_poses(poses: np.ndarray) -> np.ndarray:
    """Validate (N, 17, 3) finite poses and return them as float64."""
    p = np.asarray(poses)
    if p.ndim != 3 or p.shape[1:] != (J, 3):
        raise TrainingError(f"poses must have shape (N, {J}, 3) (H36M-17, mm); got {p.shape}")
    p = p.astype(np.float64)
    bad = ~np.isfinite(p).all(axis=(1, 2))
    if bad.any():
        idx = np.flatnonzero(bad)[:5].tolist()
        raise TrainingError(
            f"{int(bad.sum())} pose(s) contain NaN or infinite values (first rows: {idx})"
        )
    return p


def facing_angles(poses: np.ndarray) -> np.ndarray:
    """(N,) yaw (radians) of each pose's right-side vector (Rhip-Lhip)+(Rsho-Lsho) in x-y.

    The person faces ``cross(z, right)``; rotating by ``-angle`` about z makes the right
    side point to +x and the person face +y.
    """
    right = (poses[:, _RHIP] - poses[:, _LHIP]) + (poses[:, _RSHO] - poses[:, _LSHO])
    norm_xy = np.hypot(right[:, 0], right[:, 1])
    if (norm_xy < 1e-6).any():
        idx = np.flatnonzero(norm_xy < 1e-6)[:5].tolist()
        raise TrainingError(
            f"cannot find the facing direction of pose(s) {idx}: hips and shoulders have "
            "no horizontal left-right extent"
        )
    return np.arctan2(right[:, 1], right[:, 0])


def rotate_z(poses: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate (N, J, 3) poses by ``angles`` (N,) radians about the z axis (counter-clockwise)."""
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    out = poses.copy()
    out[..., 0] = c * poses[..., 0] - s * poses[..., 1]
    out[..., 1] = s * poses[..., 0] + c * poses[..., 1]
    return out


def canonicalise(poses: np.ndarray) -> np.ndarray:
    """Centre (joint mean) and rotate about z so each pose faces +y, right side +x. Metric."""
    p = check_poses(poses)
    p = p - p.mean(axis=1, keepdims=True)
    return rotate_z(p, -facing_angles(p))


def bone_size(poses: np.ndarray) -> np.ndarray:
    """(N,) total bone size sqrt(sum over the 16 bones of |bone|^2), as in the lifting's
    final normalisation (spec step 5)."""
    b = np.asarray(H36M17.bones)
    return np.sqrt(((poses[:, b[:, 1]] - poses[:, b[:, 0]]) ** 2).sum(axis=(1, 2)))


def mirror(poses: np.ndarray) -> np.ndarray:
    """Mirror poses left-right: x -> -x and left/right joints swapped (keeps a canonical pose
    canonical)."""
    out = poses[:, H36M17.flip_permutation()].copy()
    out[..., 0] *= -1
    return out


def to_rows(poses: np.ndarray) -> np.ndarray:
    """(N, 17, 3) -> (N, 51) in the model's layout: rows x, y, z of (3, 17), row-major."""
    return np.ascontiguousarray(poses.transpose(0, 2, 1).reshape(len(poses), D))


def from_rows(x: np.ndarray) -> np.ndarray:
    """(N, 51) model layout -> (N, 17, 3)."""
    return x.reshape(len(x), 3, J).transpose(0, 2, 1)


def zero_mean_basis() -> np.ndarray:
    """(51, 48) orthonormal basis of the (3, 17) row-major vectors whose rows sum to zero."""
    t = np.zeros((D, 3))
    for r in range(3):
        t[r * J : (r + 1) * J, r] = 1.0 / math.sqrt(J)
    q, _ = np.linalg.qr(np.concatenate([t, np.eye(D)], axis=1))
    basis = q[:, 3:D]
    # Gram-Schmidt via QR of [t | I] gives the complement in columns 3..50.
    return basis


# --------------------------------------------------------------------------- MPPCA


@dataclass
class MPPCAFit:
    """A fitted mixture of PPCA in ``d`` dimensions (Tipping & Bishop 1999).

    ``covariance_k = U_k diag(variances_k) U_k^T + noise_var_k (I - U_k U_k^T)``.
    """

    weights: np.ndarray  #: (K,) mixing proportions
    means: np.ndarray  #: (K, d)
    bases: np.ndarray  #: (K, d, q) orthonormal columns, by decreasing variance
    variances: np.ndarray  #: (K, q) eigenvalues of the component covariance
    noise_var: np.ndarray  #: (K,) mean discarded eigenvalue
    log_likelihood: list[float] = field(default_factory=list)  #: mean per sample, per iter
    n_iter: int = 0
    converged: bool = False
    #: EM stopped because the log-likelihood went down (a broken M-step or numerical
    #: trouble), not converged
    decreased: bool = False


def _log_gauss(y: np.ndarray, fit: MPPCAFit) -> np.ndarray:
    """(N, K) log N(y_n; component k)."""
    _, d = y.shape
    q = fit.bases.shape[2]
    z = y[:, None, :] - fit.means[None]  # (N, K, d)
    proj = np.einsum("nkd,kdq->nkq", z, fit.bases)  # (N, K, q)
    sq = np.einsum("nkd,nkd->nk", z, z)
    psq = np.einsum("nkq,nkq->nk", proj, proj)
    maha = np.einsum("nkq,kq->nk", proj**2, 1.0 / fit.variances)
    maha += (sq - psq) / fit.noise_var[None]
    logdet = np.log(fit.variances).sum(1) + (d - q) * np.log(fit.noise_var)
    return -0.5 * (maha + logdet[None] + d * math.log(2 * math.pi))


def log_likelihood(fit: MPPCAFit, y: np.ndarray) -> np.ndarray:
    """(N,) log density (nats) of each row of ``y`` (N, d) under the fitted mixture:
    log sum_k weight_k N(y; component k). For held-out data use ``pose_vectors`` first."""
    lg = _log_gauss(np.asarray(y, dtype=np.float64), fit) + np.log(fit.weights)[None]
    mx = lg.max(axis=1, keepdims=True)
    return mx[:, 0] + np.log(np.exp(lg - mx).sum(axis=1))


def _e_step(y: np.ndarray, fit: MPPCAFit) -> tuple[np.ndarray, float]:
    """Responsibilities (N, K) and the mean log-likelihood per sample."""
    lg = _log_gauss(y, fit) + np.log(fit.weights)[None]
    mx = lg.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(lg - mx).sum(axis=1))
    return np.exp(lg - lse[:, None]), float(lse.mean())


def _m_step(y: np.ndarray, resp: np.ndarray, q: int, var_floor: float) -> MPPCAFit:
    n, d = y.shape
    nk = resp.sum(axis=0)
    k_small = np.flatnonzero(nk < q + 2)
    if len(k_small):
        raise TrainingError(
            f"mixture component(s) {k_small.tolist()} collapsed to fewer than {q + 2} "
            "poses: use fewer components (K) or more varied poses"
        )
    means = (resp.T @ y) / nk[:, None]
    K = resp.shape[1]
    bases = np.empty((K, d, q))
    variances = np.empty((K, q))
    noise = np.empty(K)
    for k in range(K):  # K is 3: a loop over components of d x d matrices, not over data
        z = (y - means[k]) * np.sqrt(resp[:, k])[:, None]
        cov = (z.T @ z) / nk[k]
        evals, evecs = np.linalg.eigh(cov)
        evals, evecs = evals[::-1], evecs[:, ::-1]
        evals = np.maximum(evals, var_floor)
        noise[k] = evals[q:].mean() if d > q else var_floor
        variances[k] = np.maximum(evals[:q], noise[k])
        bases[k] = evecs[:, :q]
    return MPPCAFit(nk / n, means, bases, variances, noise)


def _kmeans_pp(y: np.ndarray, K: int, rng: np.random.Generator, iters: int = 20) -> np.ndarray:
    """Deterministic (given ``rng``) k-means++ seeding plus Lloyd iterations: labels (N,)."""
    n = len(y)
    centres = [y[rng.integers(n)]]
    d2 = ((y - centres[0]) ** 2).sum(1)
    for _ in range(1, K):
        p = d2 / d2.sum()
        centres.append(y[rng.choice(n, p=p)])
        d2 = np.minimum(d2, ((y - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    yy = (y**2).sum(1)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        dist = yy[:, None] - 2 * y @ c.T + (c**2).sum(1)[None]
        labels = dist.argmin(1)
        for k in range(K):
            members = labels == k
            if members.any():
                c[k] = y[members].mean(0)
    return labels


def _fit_mppca(
    y: np.ndarray,
    n_components: int = 3,
    n_basis: int = 25,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-6,
    progress: bool = True,
) -> MPPCAFit:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise TrainingError(f"data must be (N, d); got shape {y.shape}")
    n, d = y.shape
    K, q = int(n_components), int(n_basis)
    if K < 1 or q < 1:
        raise TrainingError("need at least 1 component and 1 basis vector")
    if q >= d:
        raise TrainingError(f"basis size {q} must be smaller than the data dimension {d}")
    need = K * (q + 2) * 2
    if n < need:
        raise TrainingError(
            f"too few poses: {n} for {K} components x {q} bases (need at least {need})"
        )
    if not np.isfinite(y).all():
        raise TrainingError("data contain NaN or infinite values")
    total_var = float(y.var(axis=0).sum())
    if total_var < 1e-9 * max(1.0, float((y**2).mean())):
        raise TrainingError("all poses are (nearly) identical: nothing to learn")
    var_floor = 1e-10 * total_var

    rng = np.random.default_rng(seed)
    labels = _kmeans_pp(y, K, rng)
    resp = np.zeros((n, K))
    resp[np.arange(n), labels] = 1.0
    fit = _m_step(y, resp, q, var_floor)

    from tqdm import tqdm

    history: list[float] = []
    bar = tqdm(total=max_iter, desc="MPPCA EM", unit="it", disable=not progress, leave=False)
    converged = decreased = False
    try:
        for _ in range(max_iter):
            resp, ll = _e_step(y, fit)
            history.append(ll)
            bar.update(1)
            bar.set_postfix(loglik=f"{ll:.4f}")
            step = history[-1] - history[-2] if len(history) > 1 else math.inf
            if step < -LL_DECREASE_TOL:  # EM never lowers the likelihood: something broke
                decreased = True
                warnings.warn(
                    f"MPPCA EM: the log-likelihood per sample went down by {-step:.3g} at "
                    f"iteration {len(history) - 1}; stopped (not converged)",
                    RuntimeWarning, stacklevel=3,
                )
                break
            if step < tol:
                converged = True
                break
            fit = _m_step(y, resp, q, var_floor)
    finally:
        bar.close()
    if not converged and not decreased:
        _, ll = _e_step(y, fit)
        history.append(ll)
    fit.log_likelihood = history
    fit.n_iter = len(history) - 1 if converged or decreased else len(history)
    fit.converged = converged
    fit.decreased = decreased
    return fit


def fit_mppca(
    y: np.ndarray,
    n_components: int = 3,
    n_basis: int = 25,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-6,
    progress: bool = True,
) -> MPPCAFit:
    """Fit a mixture of PPCA to (N, d) data by EM (float64, vectorised over samples).

    Stops when the mean log-likelihood per sample improves by less than ``tol`` (nats).
    If it goes *down* by more than ``LL_DECREASE_TOL`` (EM never does that: a bug or
    numerical trouble) it stops with ``converged = False``, ``decreased = True`` and a
    RuntimeWarning.
    Raises ``TrainingError`` for too few samples, non-finite or constant data.
    BLAS runs single-threaded here: the products are tall and thin (N x 48), and
    multi-threaded OpenBLAS on a busy machine made single calls 100x slower (measured).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_mppca(y, n_components, n_basis, seed, max_iter, tol, progress)


# --------------------------------------------------------------------------- model


def _sign_fix(basis: np.ndarray) -> np.ndarray:
    """Deterministic signs: each basis vector has a positive dot product with a fixed
    pseudo-random vector. (The largest entry is no good: with mirrored training data the
    vectors are mirror-(anti)symmetric, so their largest entries tie in magnitude.)"""
    ref = np.random.default_rng(12345).normal(size=basis.shape[-1])
    s = np.sign(basis @ ref)
    s[s == 0] = 1
    return basis * s[..., None]


def lifting_parameters(fit: MPPCAFit, q_sub: np.ndarray) -> dict[str, np.ndarray]:
    """Turn a fit in the zero-mean subspace into the lifting's ``mu``, ``e``, ``sigma``.

    ``mu`` (K, 3, 17) mm, ``e`` (K, B, 3, 17) orthonormal, ``sigma`` (K, B + 1):
    ``1 / sqrt(variances)`` then ``1 / sqrt(noise_var)`` (see the module docstring).
    """
    K, _, q = fit.bases.shape
    mu = fit.means @ q_sub.T  # (K, 51)
    e = np.einsum("dq,kqb->kbd", q_sub, fit.bases)  # (K, B, 51)
    e = _sign_fix(e)
    sigma = np.concatenate(
        [1.0 / np.sqrt(fit.variances), 1.0 / np.sqrt(fit.noise_var)[:, None]], axis=1
    )
    return {
        "mu": mu.reshape(K, 3, J),
        "e": e.reshape(K, q, 3, J),
        "sigma": sigma,
    }


def calibrate_sigma(
    sigma_raw: np.ndarray,
    weights: np.ndarray,
    prior_factor: float = 1.0,
    data_factor: float = 1.0,
    pooled_noise: bool = True,
) -> np.ndarray:
    """The lifting's ``sigma`` (K, B + 1) from the raw PPCA one (``1/sqrt(variance)``).

    ``sigma[:, :B] = prior_factor / sqrt(lambda_i)``. The data weight is
    ``data_factor / sqrt(noise)``, with ``noise`` the mixture's pooled noise variance
    ``sum_k weight_k noise_k`` shared by every component when ``pooled_noise`` (else each
    component's own). Why pooled: the lifting picks the component with the least
    ``residual + lgdet * scale^2`` where each residual is weighted by its component's
    own data weight squared; with per-component weights a component with little noise
    (standing poses: 9 mm here, against 16-19 mm) gets its residuals inflated several-fold
    and is almost never chosen. A shared weight makes the residuals comparable.
    """
    sigma = np.array(sigma_raw, dtype=np.float64, copy=True)
    if prior_factor <= 0 or data_factor <= 0:
        raise TrainingError("prior_factor and data_factor must be positive")
    sigma[:, :-1] *= prior_factor
    if pooled_noise:
        w = np.asarray(weights, dtype=np.float64)
        noise = float((w / w.sum() * sigma_raw[:, -1] ** -2.0).sum())
        sigma[:, -1] = data_factor / math.sqrt(noise)
    else:
        sigma[:, -1] *= data_factor
    return sigma


#: Defaults of the sigma calibration, chosen on a validation split (trained on subjects
#: 1, 5, 6, 7; validated on subject 8; see the model card).
PRIOR_FACTOR = 1.4
DATA_FACTOR = 1.2


def pose_vectors(
    poses: np.ndarray, mirror_augment: bool = True, size: float | None = None
) -> np.ndarray:
    """(N, 17, 3) poses (mm, z up) -> the (N or 2N, 48) vectors the mixture is fitted to:
    canonicalised (``canonicalise``), scaled to total bone size ``size`` when given (the
    ``normalise_size`` option), the mirrored copies appended when ``mirror_augment``, in
    the zero-joint-mean subspace (``zero_mean_basis``). Training and held-out scoring both
    use it."""
    canon = canonicalise(poses)
    if size is not None:  # every pose to one total bone size (still millimetres)
        canon = canon * (size / bone_size(canon))[:, None, None]
    if mirror_augment:
        canon = np.concatenate([canon, mirror(canon)], axis=0)
    return to_rows(canon) @ zero_mean_basis()


@dataclass
class TrainingReport:
    """What ``train_pose_model`` did: the fit, parameters and metadata."""

    params: dict[str, np.ndarray]
    fit: MPPCAFit
    meta: dict[str, Any]
    seconds: float


def train_pose_model(
    poses: np.ndarray,
    n_components: int = 3,
    n_basis: int = 25,
    seed: int = 0,
    mirror_augment: bool = True,
    max_iter: int = 300,
    tol: float = 1e-6,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    normalise_size: bool = False,
    prior_factor: float = PRIOR_FACTOR,
    data_factor: float = DATA_FACTOR,
    pooled_noise: bool = True,
) -> TrainingReport:
    """Train the lifting's 3D pose model from (N, 17, 3) H36M-17 poses in mm (z up).

    Returns the parameters (``mu``, ``e``, ``sigma``), the EM fit and metadata; build a
    ``PoseModel3D`` with ``to_pose_model(report)``.
    """
    import time

    t0 = time.perf_counter()
    target_size = float(bone_size(canonicalise(poses)).mean())
    y = pose_vectors(poses, mirror_augment, target_size if normalise_size else None)
    q_sub = zero_mean_basis()
    if n_basis > q_sub.shape[1] - 1:
        raise TrainingError(f"n_basis must be at most {q_sub.shape[1] - 1}; got {n_basis}")
    fit = fit_mppca(y, n_components, n_basis, seed, max_iter, tol, progress)
    params = lifting_parameters(fit, q_sub)
    # order components by weight (largest first) for a stable, readable file
    order = np.argsort(-fit.weights, kind="stable")
    params = {k: v[order] for k, v in params.items()}
    params["sigma_raw"] = params["sigma"]
    params["sigma"] = calibrate_sigma(
        params["sigma_raw"], fit.weights[order], prior_factor, data_factor, pooled_noise
    )
    info: dict[str, Any] = {
        "name": "poseviewer-h36m-mppca",
        "source": "trained by poseviewer train-3d on Human3.6M 3D poses",
        "licence": "learned from Human3.6M (Ionescu et al. 2014): research, non-commercial use",
        "trained_by": "poseviewer.train3d.train_pose_model",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "n_components": int(n_components),
        "n_basis": int(n_basis),
        "seed": int(seed),
        "mirror_augment": bool(mirror_augment),
        "normalise_size": bool(normalise_size),
        "mean_bone_size_mm": target_size,
        "n_poses": int(len(poses)),
        "n_training_vectors": int(len(y)),
        "em_iterations": int(fit.n_iter),
        "em_converged": bool(fit.converged),
        "em_tol": float(tol),
        "log_likelihood_per_pose": float(fit.log_likelihood[-1]),
        "mixing_weights": [float(w) for w in fit.weights[order]],
        "preprocessing": "joint-mean centred, yaw-canonical (faces +y, right +x), metric mm",
        "sigma": "prior_factor/sqrt(basis variance mm^2) x B, then data_factor/sqrt(noise "
        "variance mm^2), noise pooled over components if pooled_noise",
        "prior_factor": float(prior_factor),
        "data_factor": float(data_factor),
        "pooled_noise": bool(pooled_noise),
        "basis_std_mm": [[round(float(1 / v), 2) for v in row[:-1]]
                         for row in params["sigma_raw"]],
        "noise_std_mm": [round(float(1 / v), 2) for v in params["sigma_raw"][:, -1]],
    }
    if meta:
        info.update(meta)
    return TrainingReport(params, fit, info, time.perf_counter() - t0)


def to_pose_model(report: TrainingReport) -> PoseModel3D:
    """Build a ``poseviewer.lifting.PoseModel3D`` from a training report."""
    from poseviewer.lifting import PoseModel3D

    p = report.params
    return PoseModel3D(p["mu"], p["e"], p["sigma"], meta=dict(report.meta))


def load_h36m(
    path: str | None = None, subjects: tuple[int, ...] = TRAIN_SUBJECTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses (N, 17, 3) mm, subject (N,), action names without take numbers (N,)."""
    from poseviewer.paths import shared_path

    p = path or shared_path("data", "h36m", "h36m_3d_17j_10hz.npz")
    with np.load(p) as d:
        for key in ("poses", "subject", "action"):
            if key not in d:
                raise TrainingError(f"{p}: missing key {key!r} (expected poses/subject/action)")
        sel = np.isin(d["subject"], subjects)
        if not sel.any():
            raise TrainingError(f"{p}: no poses for subjects {list(subjects)}")
        poses = d["poses"][sel].astype(np.float64)
        subj = d["subject"][sel].astype(np.int64)
        act = np.array([a.rstrip("0123456789 ") for a in d["action"][sel]])
    return poses, subj, act
