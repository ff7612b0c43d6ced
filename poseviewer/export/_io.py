"""Shared plumbing of the exporters: errors, the 3D frame option, and the result's fields as
plain arrays following the field table of :mod:`poseviewer.result` (the atomic writers live
in :mod:`poseviewer.atomic` and are re-exported here)."""

from __future__ import annotations

from typing import Any

import numpy as np

from poseviewer.atomic import (  # noqa: F401  (re-exported for the exporters)
    AtomicWriteError,
    atomic_open,
    atomic_write_text,
    atomic_write_with,
)
from poseviewer.errors import ImportFormatError  # noqa: F401  (re-exported)
from poseviewer.result import (
    COMPONENT_FIELDS,
    FIT_FIELDS,
    FRAMES_3D,
    SCALE_CAP,  # noqa: F401  (re-exported)
    ComponentFit,
    EstimateResult,
    FieldSpec,
    Fit,
)

#: A file could not be written; the message names the path and the reason (an OSError).
ExportError = AtomicWriteError

#: Default origin of exported 3D poses: the pelvis (root-relative).
DEFAULT_FRAME = "pelvis"


def as_fit(fit: Any) -> Fit | None:
    """A numpy :class:`Fit` from a ``Fit`` or a lifting result (or None)."""
    if fit is None or isinstance(fit, Fit):
        return fit
    return Fit.from_lift(fit)


def in_frame(result: EstimateResult, frame: str = DEFAULT_FRAME) -> EstimateResult:
    """``result`` with its 3D poses in ``frame``: 'pelvis' (root-relative, the default of
    every exporter) or 'lifting' (the lifting's own frame, as computed)."""
    if frame not in FRAMES_3D:
        raise ValueError(f"frame must be one of {', '.join(FRAMES_3D)}, not {frame!r}")
    if frame == "pelvis":
        return result.root_relative()
    return result


def fit_values(fit: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """A stage's fit (N = 1) as ``({fit field: value}, {component field: (K, ...) value})``
    without the N axis, table order; optional fields the fit lacks are left out."""
    f = as_fit(fit)
    if f is None:
        return None

    def take(specs: tuple[FieldSpec, ...], obj: Any) -> dict[str, np.ndarray]:
        out = {}
        for s in specs:
            v = getattr(obj, s.name, None)
            if v is not None:
                out[s.name] = np.asarray(v, dtype=s.np_dtype)[0]
        return out

    return take(FIT_FIELDS, f), take(COMPONENT_FIELDS, f.components)


def fit_from_values(fit: dict[str, Any], comps: dict[str, Any]) -> Fit:
    """A :class:`Fit` (N = 1) from per-field values without the N axis (as read back)."""

    def n1(specs: tuple[FieldSpec, ...], values: dict[str, Any]) -> dict[str, Any]:
        return {s.name: (None if values.get(s.name) is None
                         else np.asarray(values[s.name], dtype=s.np_dtype)[None])
                for s in specs}

    return Fit(components=ComponentFit(**n1(COMPONENT_FIELDS, comps)), **n1(FIT_FIELDS, fit))


def bind(spec: FieldSpec, value: np.ndarray, dims: dict[str, int], where: str) -> None:
    """Check ``value``'s shape against ``spec`` (binding unbound symbols in ``dims``);
    ImportFormatError naming ``where`` on a mismatch."""
    shape = np.shape(value)
    if len(shape) != len(spec.shape):
        raise ImportFormatError(f"{where}: shape {shape}, expected {spec.shape}")
    for sym, n in zip(spec.shape, shape, strict=True):
        if isinstance(sym, str):
            sym_n = dims.setdefault(sym, n)
        else:
            sym_n = sym
        if n != sym_n:
            want = tuple(dims.get(s, s) if isinstance(s, str) else s for s in spec.shape)
            raise ImportFormatError(f"{where}: shape {shape}, expected {want}")


def result_dims(result: EstimateResult) -> dict[str, int]:
    """The shape symbols (J, J3, K, C) bound from the result's data; ValueError when the
    persons and stages disagree."""
    dims: dict[str, int] = {}
    for p, person in enumerate(result.persons):
        for stage in person.stages:
            where = f"person {p} stage {stage.index}"
            try:
                bind(FieldSpec("joints_2d", ("J", 2), "f8", "", "", ""),
                     np.asarray(stage.joints_2d), dims, f"{where}: joints_2d")
                vals = fit_values(stage.fit)
                if vals is None:
                    continue
                for specs, values in zip((FIT_FIELDS, COMPONENT_FIELDS), vals, strict=True):
                    for s in specs:
                        if s.name in values:
                            bind(s, values[s.name], dims, f"{where}: fit {s.name}")
            except ImportFormatError as exc:
                raise ValueError(str(exc)) from None
    return dims


def check_result(result: EstimateResult) -> dict[str, int]:
    """Raise ValueError naming the problem when ``result`` is not exportable; returns its
    shape symbols (see :func:`result_dims`)."""
    if not isinstance(result, EstimateResult):
        raise TypeError(f"expected an EstimateResult, got {type(result).__name__}")
    for p, person in enumerate(result.persons):
        if not person.stages:
            raise ValueError(f"person {p} has no stages")
    return result_dims(result)
