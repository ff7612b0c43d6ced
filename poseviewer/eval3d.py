"""Lifting accuracy of 3D pose models on held-out Human3.6M subjects, side by side.

For every test pose (subjects 9 and 11 by default, every ``stride``-th row of the 10 Hz
file) and a random yaw (seeded), the pose is placed in the lifting's camera frame
(x = image right, y = depth away from the camera, z = up; centred on its joint mean) and
projected to 2D either orthographically or with a pinhole camera ``distance`` mm away.
The 14 CPM joints (H36M-17 -> CPM-14 through ``poseviewer.skeleton``: the CPM neck is the
H36M thorax, the head top the H36M head, so the models observe it as the head:
``h36m_head_top``) are lifted with each model, optionally with 1, 2
or 4 random joints hidden (the same joints for every model). Errors over all 17 joints:

- P-MPJPE: after similarity Procrustes alignment (``poseviewer.metrics.p_mpjpe``);
- S-MPJPE: after pelvis centring and least-squares scale alignment
  (``poseviewer.metrics.scaled_mpjpe``); needed because the lifting's output has a fixed
  total bone size (spec step 5).

Calibration of the posterior joint covariances (``fit.joint_cov``): the truth is put in
the output's own convention (centred on its joint mean, scaled to the output's total bone
size), the prediction centred on its joint mean, and for every joint the squared
Mahalanobis distance d^2 = r^T Sigma^-1 r is compared with the posterior's quantiles
(a Student-t with the fit's ``joint_cov_dof``: ``lifting.ellipsoid_d2``; the chi-square
(3) ones for a model without it): the fraction of joints inside the 50%, 90% and 95%
ellipsoids. One
scale factor per model can be fitted on other subjects (S8 by default: ``fit_cov_scale``,
the factor that puts exactly 90% of those joints inside the 90% ellipsoids); coverage is
reported before (raw posterior, ``PoseModel3D.cov_scale`` = 1) and after.

Every model sees exactly the same 2D inputs within one run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poseviewer.atomic import atomic_write_with
from poseviewer.metrics import p_mpjpe, scaled_mpjpe
from poseviewer.skeleton import CPM14, H36M17, h36m_to_cpm

METRICS = ("P-MPJPE", "S-MPJPE")
#: Nominal levels of the coverage table.
LEVELS = (0.5, 0.9, 0.95)
#: Level at which the calibration factor is fitted.
FIT_LEVEL = 0.9


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate on and how to make the 2D inputs."""

    subjects: tuple[int, ...] = (9, 11)
    stride: int = 5  #: every stride-th row of the 10 Hz file (5 -> 2 Hz)
    seed: int = 0
    hidden: tuple[int, ...] = (0, 1, 2, 4)
    projections: tuple[str, ...] = ("orthographic", "perspective")
    distance: float = 4500.0  #: mm from the camera to the pose's joint mean (perspective)
    focal: float = 1145.0  #: px (perspective), about Human3.6M's cameras
    ortho_scale: float = 0.3  #: px per mm (orthographic)
    batch: int = 256


@dataclass
class EvalResult:
    """Per-pose errors: ``errors[(model, projection, hidden, metric)]`` (N,) in mm."""

    config: EvalConfig
    actions: np.ndarray  #: (N,) action names without take numbers
    subjects: np.ndarray  #: (N,)
    errors: dict[tuple[str, str, int, str], np.ndarray] = field(default_factory=dict)
    not_lifted: dict[tuple[str, str, int], int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: squared Mahalanobis distances (N, 17) of the truth under the raw posterior
    d2: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)
    #: (N,) the posterior's degrees of freedom per pose (``fit.joint_cov_dof``; inf:
    #: Gaussian), same keys as ``d2``
    dof: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)
    #: calibration factor per model (fitted on ``calibration_subjects``; absent: none)
    cov_scale: dict[str, float] = field(default_factory=dict)
    calibration_subjects: tuple[int, ...] = ()

    def coverage(self, model: str, scaled: bool = False, projection: str | None = None,
                 hidden: int | None = None, levels: Sequence[float] = LEVELS
                 ) -> dict[float, float]:
        """Fraction of true joints inside the nominal ellipsoids (pooled over the chosen
        projection / hidden count, all when None); ``scaled`` with the fitted factor."""
        keys = [k for k in self.d2 if k[0] == model and (projection is None or k[1] == projection)
                and (hidden is None or k[2] == hidden)]
        if not keys:
            return {lv: float("nan") for lv in levels}
        x = np.concatenate([self.d2[k] for k in keys])
        dof = np.concatenate([self.dof.get(k, np.full(len(self.d2[k]), np.inf))
                              for k in keys])
        if scaled:
            x = x / self.cov_scale.get(model, 1.0)
        return coverage(x, levels, dof)

    @property
    def models(self) -> list[str]:
        """Model names in evaluation order."""
        return list(dict.fromkeys(k[0] for k in self.errors))

    def action_names(self) -> list[str]:
        """Actions, sorted."""
        return sorted(set(self.actions.tolist()))

    def per_action(self, model: str, projection: str, hidden: int, metric: str) -> dict:
        """Mean error per action, plus 'Average' (mean over actions) and 'All poses'.

        Poses the model did not lift (NaN errors, counted in ``not_lifted``) are left out
        of the means; a group with no lifted pose gives NaN.
        """
        err = self.errors[(model, projection, hidden, metric)]
        out = {a: _nanmean(err[self.actions == a]) for a in self.action_names()}
        out["Average"] = _nanmean(np.array([out[a] for a in self.action_names()]))
        out["All poses"] = _nanmean(err)
        return out


def _nanmean(x: np.ndarray) -> float:
    """Mean over the finite entries; NaN when there are none (without numpy's warning)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def _bold_best(vals: Sequence[float]) -> list[str]:
    """Cells with the smallest finite value in bold; NaN (nothing lifted) as 'n/a'."""
    finite = [v for v in vals if np.isfinite(v)]
    best = min(finite) if finite else None
    return ["n/a" if not np.isfinite(v) else f"**{v:.1f}**" if v == best else f"{v:.1f}"
            for v in vals]


def camera_frame(poses: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """World poses (N, 17, 3) mm, z up -> the lifting's camera frame: centred on the joint
    mean and rotated by ``yaw`` (N,) about z. x = image right, y = depth away, z = up."""
    p = poses - poses.mean(axis=1, keepdims=True)
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    out = p.copy()
    out[..., 0] = c * p[..., 0] - s * p[..., 1]
    out[..., 1] = s * p[..., 0] + c * p[..., 1]
    return out


def project(cam: np.ndarray, projection: str, config: EvalConfig) -> np.ndarray:
    """Camera-frame poses (N, J, 3) -> image pixels (N, J, 2) (x right, y down)."""
    x, depth, z = cam[..., 0], cam[..., 1], cam[..., 2]
    if projection == "orthographic":
        u, v = config.ortho_scale * x, -config.ortho_scale * z
    elif projection == "perspective":
        d = depth + config.distance
        if (d <= 100.0).any():
            raise ValueError("a joint is behind or at the camera; increase the distance")
        u, v = config.focal * x / d, -config.focal * z / d
    else:
        raise ValueError(f"unknown projection {projection!r} (orthographic or perspective)")
    return np.stack([u + 500.0, v + 500.0], axis=-1)


def hidden_masks(n: int, counts: Sequence[int], rng: np.random.Generator) -> dict:
    """Visibility (n, J) per count: ``count`` distinct random CPM joints hidden per pose."""
    order = np.argsort(rng.random((n, CPM14.num_joints)), axis=1)
    out = {}
    for c in counts:
        vis = np.ones((n, CPM14.num_joints), dtype=bool)
        np.put_along_axis(vis, order[:, :c], False, axis=1)
        out[c] = vis
    return out


def load_test_poses(
    path: str | Path | None, config: EvalConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test poses (every ``stride``-th row of the chosen subjects), actions, subjects."""
    from poseviewer.train3d import load_h36m

    poses, subj, act = load_h36m(str(path) if path else None, config.subjects)
    sl = slice(None, None, config.stride)
    return poses[sl], act[sl], subj[sl]


@contextmanager
def h36m_head_top(model) -> Iterator[None]:
    """Within the block the model observes the CPM head top as Human3.6M's head joint (the
    2D inputs here are Human3.6M's joints, which have no top of the head): its
    ``head_top_offset`` (LSP's head top, for photos) is set to 0 and restored after."""
    old = getattr(model, "head_top_offset", None)
    if old is None:
        yield
        return
    model.head_top_offset = 0.0
    try:
        yield
    finally:
        model.head_top_offset = old


def _lift(model, joints: np.ndarray, vis: np.ndarray, batch: int
          ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    out = np.empty((len(joints), H36M17.num_joints, 3))
    cov = np.full((len(joints), H36M17.num_joints, 3, 3), np.nan)
    dof = np.full(len(joints), np.inf)
    lifted = np.ones(len(joints), dtype=bool)
    for i in range(0, len(joints), batch):
        with h36m_head_top(model):
            fit = model.lift(joints[i : i + batch], vis[i : i + batch], as_numpy=True)
        out[i : i + batch] = np.asarray(fit.pose_3d, dtype=np.float64)
        lifted[i : i + batch] = np.asarray(fit.lifted, dtype=bool)
        jc = getattr(fit, "joint_cov", None)
        if jc is not None:
            cov[i : i + batch] = np.asarray(jc, dtype=np.float64)
        jd = getattr(fit, "joint_cov_dof", None)
        if jd is not None:
            dof[i : i + batch] = np.asarray(jd, dtype=np.float64)
    return out, int((~lifted).sum()), cov, dof


def _bone_size(p: np.ndarray) -> np.ndarray:
    b = np.asarray(H36M17.bones)
    return np.sqrt(((p[:, b[:, 1]] - p[:, b[:, 0]]) ** 2).sum((1, 2)))


def mahalanobis_sq(pred: np.ndarray, cov: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 17) squared Mahalanobis distances of the true joints under the predicted
    covariances (N, 17, 3, 3), both poses centred on their joint means and the truth
    scaled to the prediction's total bone size (NaN where not lifted)."""
    p = pred - pred.mean(1, keepdims=True)
    g = gt - gt.mean(1, keepdims=True)
    g = g * (_bone_size(p) / _bone_size(g))[:, None, None]
    r = g - p
    ok = np.isfinite(cov).all((1, 2, 3)) & np.isfinite(r).all((1, 2))
    out = np.full(r.shape[:2], np.nan)
    out[ok] = np.einsum("nji,nji->nj", r[ok], np.linalg.solve(cov[ok], r[ok][..., None])[..., 0])
    return out


def _finite(d2: np.ndarray, dof: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The finite ``d2`` (flattened) and their degrees of freedom (``dof`` broadcast over
    d2's trailing dims, e.g. (N,) per pose for (N, 17); None: inf, Gaussian)."""
    x = np.asarray(d2, dtype=np.float64)
    nu = np.full(x.shape, np.inf) if dof is None else np.asarray(dof, dtype=np.float64)
    nu = np.broadcast_to(nu.reshape(nu.shape + (1,) * (x.ndim - nu.ndim)), x.shape)
    ok = np.isfinite(x)
    return x[ok], nu[ok]


def _radius2(level: float, nu: np.ndarray) -> np.ndarray:
    """``ellipsoid_d2`` computed once per distinct dof."""
    from poseviewer.lifting import ellipsoid_d2

    uniq, inv = np.unique(nu, return_inverse=True)
    return ellipsoid_d2(level, uniq)[inv.reshape(-1)]


def coverage(d2: np.ndarray, levels: Sequence[float] = LEVELS,
             dof: np.ndarray | None = None) -> dict[float, float]:
    """Fraction of the finite ``d2`` inside each level's ellipsoid: d^2 <=
    ``ellipsoid_d2(level, dof)`` (``dof`` None: the chi-square(3) quantile)."""
    x, nu = _finite(d2, dof)
    if not len(x):
        return {lv: float("nan") for lv in levels}
    return {lv: float((x <= _radius2(lv, nu)).mean()) for lv in levels}


def fit_cov_scale(d2: np.ndarray, level: float = FIT_LEVEL,
                  dof: np.ndarray | None = None) -> float:
    """The factor on the covariances that puts exactly ``level`` of the joints inside the
    ``level`` ellipsoids: quantile(d^2 / ellipsoid_d2(level, dof), level)."""
    x, nu = _finite(d2, dof)
    if not len(x):
        raise ValueError("no finite distances to calibrate on")
    return float(np.quantile(x / _radius2(level, nu), level))


def evaluate(
    models: Mapping[str, object],
    poses: np.ndarray,
    actions: np.ndarray,
    subjects: np.ndarray | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
    calibration: tuple[np.ndarray, tuple[int, ...]] | None = None,
) -> EvalResult:
    """Lift the projected test poses with every model and collect per-pose errors and the
    calibration distances. ``calibration`` = (poses, subjects): other poses on which one
    covariance factor per model is fitted (same projections and hidden joints, pooled)."""
    from tqdm import tqdm

    config = config or EvalConfig()
    poses = np.asarray(poses, dtype=np.float64)
    n = len(poses)
    if n == 0:
        raise ValueError("no test poses")
    rng = np.random.default_rng(config.seed)
    yaw = rng.uniform(0.0, 2 * np.pi, size=n)
    gt = camera_frame(poses, yaw)
    masks = hidden_masks(n, config.hidden, rng)
    result = EvalResult(
        config, np.asarray(actions), np.asarray(subjects if subjects is not None else [0] * n)
    )
    jobs = [(m, p, h) for m in models for p in config.projections for h in config.hidden]
    images = {p: h36m_to_cpm(project(gt, p, config)) for p in config.projections}
    for name, proj, h in tqdm(jobs, desc="eval-3d", disable=not progress, leave=False):
        t0 = time.perf_counter()
        pred, bad, cov, dof = _lift(models[name], images[proj], masks[h], config.batch)
        result.seconds[name] = result.seconds.get(name, 0.0) + time.perf_counter() - t0
        result.not_lifted[(name, proj, h)] = bad
        result.errors[(name, proj, h, "P-MPJPE")] = p_mpjpe(pred, gt)
        result.errors[(name, proj, h, "S-MPJPE")] = scaled_mpjpe(pred, gt, root=0)
        raw = getattr(models[name], "cov_scale", 1.0)  # d^2 under the raw posterior
        result.d2[(name, proj, h)] = mahalanobis_sq(pred, cov, gt) * raw
        result.dof[(name, proj, h)] = dof
    if calibration is not None:
        cal_poses, cal_subjects = calibration
        cal_poses = np.asarray(cal_poses, dtype=np.float64)
        crng = np.random.default_rng(config.seed + 1)
        cgt = camera_frame(cal_poses, crng.uniform(0.0, 2 * np.pi, size=len(cal_poses)))
        cmasks = hidden_masks(len(cal_poses), config.hidden, crng)
        cimages = {p: h36m_to_cpm(project(cgt, p, config)) for p in config.projections}
        result.calibration_subjects = tuple(cal_subjects)
        for name in tqdm(list(models), desc="calibration", disable=not progress, leave=False):
            d2, dofs = [], []
            for proj in config.projections:
                for h in config.hidden:
                    pred, _, cov, dof = _lift(models[name], cimages[proj], cmasks[h],
                                              config.batch)
                    raw = getattr(models[name], "cov_scale", 1.0)
                    d2.append(mahalanobis_sq(pred, cov, cgt) * raw)
                    dofs.append(dof)
            result.cov_scale[name] = fit_cov_scale(np.concatenate(d2),
                                                   dof=np.concatenate(dofs))
    return result


# --------------------------------------------------------------------------- reporting


def summary_table(result: EvalResult) -> str:
    """Markdown: mean over actions per projection x hidden joints x metric x model."""
    models = result.models
    head = "| projection | hidden joints | " + " | ".join(
        f"{met} {m}" for met in METRICS for m in models
    ) + " |"
    lines = [head, "|" + " --- |" * (2 + len(METRICS) * len(models))]
    for proj in result.config.projections:
        for h in result.config.hidden:
            cells = []
            for met in METRICS:
                vals = [result.per_action(m, proj, h, met)["Average"] for m in models]
                cells += _bold_best(vals)
            lines.append(f"| {proj} | {h} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def action_table(result: EvalResult, projection: str, hidden: int = 0) -> str:
    """Markdown: per-action errors (mm) for one projection and hidden-joint count."""
    models = result.models
    head = "| action | " + " | ".join(f"{met} {m}" for met in METRICS for m in models) + " |"
    lines = [head, "|" + " --- |" * (1 + len(METRICS) * len(models))]
    per = {(m, met): result.per_action(m, projection, hidden, met) for m in models
           for met in METRICS}
    for a in [*result.action_names(), "Average"]:
        cells = []
        for met in METRICS:
            cells += _bold_best([per[(m, met)][a] for m in models])
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: EvalResult, path: str | Path) -> None:
    """Save a small PNG: per-action P-MPJPE (perspective, all joints visible) and mean
    errors against the number of hidden joints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result.models
    proj = "perspective" if "perspective" in result.config.projections else \
        result.config.projections[0]
    acts = result.action_names()
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(11, 3.8), dpi=80, gridspec_kw={"width_ratios": [2.2, 1]}
    )
    width = 0.8 / len(models)
    x = np.arange(len(acts) + 1)
    colours = ["#888888", "#1f77b4", "#ff7f0e", "#2ca02c"]
    for i, m in enumerate(models):
        per = result.per_action(m, proj, 0, "P-MPJPE")
        ax1.bar(x + (i - (len(models) - 1) / 2) * width, [per[a] for a in [*acts, "Average"]],
                width, label=m, color=colours[i % len(colours)])
    ax1.set_xticks(x, [*acts, "Average"], rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("P-MPJPE (mm)")
    ax1.set_title(f"Per action, {proj}, all joints visible", fontsize=10)
    ax1.legend(fontsize=8)
    for i, m in enumerate(models):
        for met, style in zip(METRICS, ("-", "--"), strict=True):
            for proj2, marker in zip(result.config.projections, ("o", "s"), strict=False):
                ys = [result.per_action(m, proj2, h, met)["Average"]
                      for h in result.config.hidden]
                ax2.plot(result.config.hidden, ys, style, marker=marker, ms=4,
                         color=colours[i % len(colours)],
                         label=f"{m} {met} {proj2[:5]}")
    ax2.set_xlabel(f"hidden joints (of {CPM14.num_joints})")
    ax2.set_ylabel("mm (mean over actions)")
    ax2.set_xticks(list(result.config.hidden))
    ax2.set_title("Robustness to hidden joints", fontsize=10)
    ax2.legend(fontsize=6, ncol=1)
    fig.tight_layout()
    try:
        atomic_write_with(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def report_markdown(result: EvalResult, sources: Mapping[str, object] | None = None) -> str:
    """The full evaluation report: setup, summary table and per-action tables."""
    cfg = result.config
    n = len(result.actions)
    lines = [
        f"Test poses: {n} (subjects {', '.join(map(str, cfg.subjects))}, every "
        f"{cfg.stride}th row of the 10 Hz file), one random yaw each (seed {cfg.seed}); "
        f"perspective camera {cfg.distance / 1000:.1f} m away, f = {cfg.focal:.0f} px. "
        f"Errors in mm over the {H36M17.num_joints} H36M joints; 'Average' is the mean over the "
        f"{len(result.action_names())} actions; best in bold.",
    ]
    if sources:
        lines.append("Models: " + "; ".join(f"{k} = `{Path(str(v)).name}`"
                                            for k, v in sources.items()) + ".")
    bad = {k: v for k, v in result.not_lifted.items() if v}
    if bad:
        lines.append("Not lifted (fewer than 5 visible joints or a degenerate 2D pose; "
                     "left out of the means): " + "; ".join(
                         f"{m} {p} {h} hidden: {v}" for (m, p, h), v in bad.items()) + ".")
    lines += ["", "Mean over actions, by projection and number of hidden joints:", "",
              summary_table(result)]
    for proj in cfg.projections:
        lines += ["", f"Per action, {proj}, all {CPM14.num_joints} joints visible:", "",
                  action_table(result, proj, 0)]
    if result.d2:
        lines += ["", calibration_text(result)]
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    lines += ["", f"Lifting time in this run: {secs}."]
    return "\n".join(lines)


def calibration_table(result: EvalResult) -> str:
    """Markdown: coverage of the nominal ellipsoids per model, projection and hidden
    joints, raw posterior and with the fitted factor."""
    models = result.models
    lv = " / ".join(f"{round(x * 100)}%" for x in LEVELS)
    head = "| projection | hidden joints | " + " | ".join(
        f"{m} raw | {m} scaled" for m in models) + " |"
    lines = [head, "|" + " --- |" * (2 + 2 * len(models))]
    rows = [(p, h) for p in result.config.projections for h in result.config.hidden]
    rows.append((None, None))
    for p, h in rows:
        cells = []
        for m in models:
            for scaled in (False, True):
                cov = result.coverage(m, scaled, p, h)
                cells.append(" / ".join(f"{100 * cov[x]:.1f}" for x in LEVELS))
        lines.append(f"| {p or 'all'} | {'all' if h is None else h} | " + " | ".join(cells)
                     + " |")
    return f"Coverage (% of true joints inside the {lv} ellipsoids):\n\n" + "\n".join(lines)


def calibration_text(result: EvalResult) -> str:
    """The calibration paragraph and table of the report."""
    subj = ", ".join(f"S{s}" for s in result.calibration_subjects) or "none"
    factors = "; ".join(f"{m}: x{f:.3g}" for m, f in result.cov_scale.items()) or \
        "not fitted"
    return (
        "Uncertainty calibration (``fit.joint_cov``): truth centred and scaled to the "
        "output's total bone size, prediction centred; squared Mahalanobis distance per "
        "joint against the posterior's quantiles (a Student-t with the fit's degrees of "
        "freedom, ``ellipsoid_d2``). 'raw' = the posterior as computed; "
        f"'scaled' = covariances times one factor per model fitted on {subj} (the factor "
        f"that puts 90% of those joints inside the 90% ellipsoids): {factors}.\n\n"
        + calibration_table(result))


def plot_calibration(result: EvalResult, path: str | Path) -> None:
    """Save a PNG: coverage against nominal level per model, raw and scaled (all
    projections and hidden counts pooled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = np.linspace(0.05, 0.99, 40)
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=90)
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, label="ideal")
    colours = ["#888888", "#1f77b4", "#ff7f0e", "#2ca02c"]
    for i, m in enumerate(result.models):
        for scaled, style in ((False, "--"), (True, "-")):
            if scaled and m not in result.cov_scale:
                continue
            cov = result.coverage(m, scaled, levels=levels)
            label = f"{m} " + (f"x{result.cov_scale[m]:.3g} (fitted on "
                               + ", ".join(f"S{s}" for s in result.calibration_subjects)
                               + ")" if scaled else "raw posterior")
            ax.plot(levels, [cov[x] for x in levels], style, color=colours[i % len(colours)],
                    label=label)
    ax.set_xlabel("nominal level")
    ax.set_ylabel("fraction of true joints inside")
    subj = ", ".join(f"S{s}" for s in result.config.subjects)
    ax.set_title(f"Joint covariance calibration ({subj})", fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    try:
        atomic_write_with(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- elevations

#: Elevations (degrees) of the ``--elevations`` table: the camera tilted down by e.
TABLE_ELEVATIONS = (-20.0, 0.0, 15.0, 30.0, 45.0, 60.0, 75.0)
#: The table's conditions: (name, hidden joints, 2D noise as a fraction of the torso).
ELEVATION_CONDITIONS = (("all visible", 0, 0.0), ("4 hidden", 4, 0.0),
                        ("noise 5%", 0, 0.05))


def tilt(cam: np.ndarray, elevation_deg: float) -> np.ndarray:
    """Camera-frame poses (N, J, 3) (x right, y depth, z up) as a camera tilted down by
    ``elevation_deg`` sees them: (x, depth', up') with up' = sin e y + cos e z (a point
    further away appears higher) and depth' = cos e y - sin e z."""
    e = np.deg2rad(elevation_deg)
    out = cam.copy()
    out[..., 1] = np.cos(e) * cam[..., 1] - np.sin(e) * cam[..., 2]
    out[..., 2] = np.sin(e) * cam[..., 1] + np.cos(e) * cam[..., 2]
    return out


def torso_length_2d(joints: np.ndarray) -> np.ndarray:
    """(N,) image length of the torso of CPM-14 joints (N, 14, 2): neck to mid-hip."""
    from poseviewer.skeleton import CPM14

    j = CPM14.joints
    neck = joints[:, j.index("neck")]
    hips = 0.5 * (joints[:, j.index("right_hip")] + joints[:, j.index("left_hip")])
    return np.linalg.norm(neck - hips, axis=-1)


@dataclass
class ElevationResult:
    """Per condition and elevation: P-MPJPE (N,) mm and the fitted elevation (N,) deg."""

    elevations: tuple[float, ...]
    n_poses: int
    errors: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    fitted: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)

    def mean(self, cond: str, e: float) -> float:
        return _nanmean(self.errors[(cond, e)])

    def elevation_mae(self, cond: str, within: tuple[float, float] | None = None) -> float:
        """Mean |fitted - true| elevation (degrees) over the table's elevations (within
        ``within``, inclusive, when given)."""
        errs = [np.abs(self.fitted[(cond, e)] - e) for e in self.elevations
                if within is None or within[0] <= e <= within[1]]
        return _nanmean(np.concatenate(errs))


def evaluate_elevations(model, poses: np.ndarray, elevations: Sequence[float] = TABLE_ELEVATIONS,
                        seed: int = 0, conditions=ELEVATION_CONDITIONS, batch: int = 256,
                        progress: bool = False) -> ElevationResult:
    """The ``--elevations`` protocol: every pose at a random yaw (seeded), seen by an
    orthographic camera tilted down by each elevation, ground-truth 2D (CPM-14 through
    ``h36m_to_cpm``), optionally with random hidden joints or Gaussian 2D noise of a
    fraction of the 2D torso length; P-MPJPE and the fitted elevation of each pose."""
    from tqdm import tqdm

    poses = np.asarray(poses, dtype=np.float64)
    n = len(poses)
    rng = np.random.default_rng(seed)
    gt = camera_frame(poses, rng.uniform(0.0, 2 * np.pi, size=n))
    masks = hidden_masks(n, sorted({h for _, h, _ in conditions}), rng)
    noise = rng.standard_normal((n, CPM14.num_joints, 2))
    cfg = EvalConfig()
    out = ElevationResult(tuple(elevations), n)
    jobs = [(c, e) for c in conditions for e in elevations]
    for (name, h, sigma), e in tqdm(jobs, desc="elevations", disable=not progress,
                                    leave=False):
        img = h36m_to_cpm(project(tilt(gt, e), "orthographic", cfg))
        if sigma:
            img = img + noise * (sigma * torso_length_2d(img))[:, None, None]
        pred = np.empty((n, 17, 3))
        fitted = np.empty(n)
        for i in range(0, n, batch):
            with h36m_head_top(model):
                fit = model.lift(img[i : i + batch], masks[h][i : i + batch], as_numpy=True)
            pred[i : i + batch] = fit.pose_3d
            el = getattr(fit, "elevation", None)
            fitted[i : i + batch] = np.nan if el is None else np.degrees(el)
        out.errors[(name, e)] = p_mpjpe(pred, gt)
        out.fitted[(name, e)] = fitted
    return out


def elevation_table(result: ElevationResult, model_name: str = "") -> str:
    """Markdown: P-MPJPE (mm) per condition and elevation, the ratio of the worst
    elevation in -20..60 to the level figure, and the elevation's mean absolute error."""
    els = result.elevations
    head = ("| condition | " + " | ".join(f"{e:g}" for e in els)
            + " | worst -20..60 / level | elevation MAE (deg) |")
    lines = [head, "|" + " --- |" * (len(els) + 3)]
    conds = list(dict.fromkeys(c for c, _ in result.errors))
    for c in conds:
        vals = [result.mean(c, e) for e in els]
        lvl = result.mean(c, 0.0) if 0.0 in els else float("nan")
        worst = max((v for e, v in zip(els, vals, strict=True) if -20 <= e <= 60),
                    default=float("nan"))
        lines.append(f"| {c} | " + " | ".join(f"{v:.1f}" for v in vals)
                     + f" | {worst / lvl:.3f} | {result.elevation_mae(c):.1f} |")
    title = (f"P-MPJPE (mm) by camera elevation (degrees, camera tilted down), "
             f"{result.n_poses} poses, orthographic, ground-truth 2D"
             + (f", model {model_name}" if model_name else "") + ":")
    return title + "\n\n" + "\n".join(lines)
