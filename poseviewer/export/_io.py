"""Shared plumbing of the exporters: errors and the result as plain arrays (the atomic
writers live in :mod:`poseviewer.atomic` and are re-exported here)."""

from __future__ import annotations

from typing import Any

import numpy as np

from poseviewer.atomic import (  # noqa: F401  (re-exported for the exporters)
    AtomicWriteError,
    atomic_open,
    atomic_write_text,
    atomic_write_with,
)
from poseviewer.result import EstimateResult, StageResult

#: The lifting's scale cap (lifting spec, step 3): a component whose scale sits exactly here
#: was refitted with the capped scale and carries the depth quirk.
SCALE_CAP = -0.001


#: A file could not be written; the message names the path and the reason (an OSError).
ExportError = AtomicWriteError


class ImportFormatError(ValueError):
    """A file to import is not in a format we understand, or its content is inconsistent."""


def fit_arrays(stage: StageResult) -> dict[str, np.ndarray] | None:
    """The stage's lifting as plain numpy arrays without the N = 1 axis, or None if not run.

    Keys: lifted (), component (), pose_3d (17,3), joints_2d (17,2), comp_pose_3d (K,17,3),
    comp_joints_2d (K,17,2), score/residual/scale/yaw (K,), capped (K,) bool, and coeffs
    (K,28), centre (2,) and norm () (the lifting's step-1 normalisation, image pixels)
    when the fit has them.
    """
    fit = stage.fit
    if fit is None:
        return None
    comps = fit.components

    def a(x: Any, dtype: Any = np.float64) -> np.ndarray:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=dtype)[0]

    scale = a(comps.scale)
    out = {
        "lifted": a(fit.lifted, bool),
        "component": a(fit.component, np.int64),
        "pose_3d": a(fit.pose_3d),
        "joints_2d": a(fit.joints_2d),
        "comp_pose_3d": a(comps.pose_3d),
        "comp_joints_2d": a(comps.joints_2d),
        "score": a(comps.score),
        "residual": a(comps.residual),
        "scale": scale,
        "yaw": a(comps.yaw),
        "capped": np.isclose(scale, SCALE_CAP, rtol=0.0, atol=1e-12),
    }
    if getattr(comps, "coeffs", None) is not None:
        out["coeffs"] = a(comps.coeffs)
    if getattr(fit, "centre", None) is not None:
        out["centre"] = a(fit.centre)
    if getattr(fit, "norm", None) is not None:
        out["norm"] = a(fit.norm)
    return out


def num_components(result: EstimateResult) -> int:
    """K of the first lifted stage in the result (0 when nothing was lifted)."""
    for person in result.persons:
        for stage in person.stages:
            fa = fit_arrays(stage)
            if fa is not None:
                return int(fa["score"].shape[0])
    return 0


def check_result(result: EstimateResult) -> None:
    """Raise ValueError naming the problem when ``result`` is not exportable."""
    if not isinstance(result, EstimateResult):
        raise TypeError(f"expected an EstimateResult, got {type(result).__name__}")
    for p, person in enumerate(result.persons):
        if not person.stages:
            raise ValueError(f"person {p} has no stages")
        for stage in person.stages:
            if np.shape(stage.joints_2d) != (14, 2):
                raise ValueError(
                    f"person {p} stage {stage.index}: joints_2d has shape "
                    f"{np.shape(stage.joints_2d)}, expected (14, 2)"
                )


def make_fit(arrays: dict[str, np.ndarray]) -> Any:
    """A numpy LiftResult (N = 1) from the per-stage arrays of :func:`fit_arrays` (as read
    back from a file)."""
    from poseviewer.lifting import ComponentFits, LiftResult

    def n1(x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[None]

    k = int(np.asarray(arrays["score"]).shape[0])
    coeffs = arrays.get("coeffs")
    centre = arrays.get("centre")
    norm = arrays.get("norm")
    comps = ComponentFits(
        pose_3d=n1(arrays["comp_pose_3d"]),
        joints_2d=n1(arrays["comp_joints_2d"]),
        score=n1(arrays["score"]),
        residual=n1(arrays["residual"]),
        scale=n1(arrays["scale"]),
        yaw=n1(arrays["yaw"]),
        coeffs=n1(coeffs) if coeffs is not None else np.full((1, k, 28), np.nan),
    )
    return LiftResult(
        pose_3d=n1(arrays["pose_3d"]),
        component=n1(np.asarray(arrays["component"], dtype=np.int64)),
        lifted=n1(np.asarray(arrays["lifted"], dtype=bool)),
        joints_2d=n1(arrays["joints_2d"]),
        components=comps,
        centre=n1(centre) if centre is not None else np.full((1, 2), np.nan),
        norm=n1(norm) if norm is not None else np.full((1,), np.nan),
    )
