"""Long-format CSV: one row per person / stage / (component) / joint. See docs/export-format.md.

Rows of ``kind = "2d"`` hold the CNN's CPM-14 joints of a stage (``image_x, image_y``,
``confidence``, ``visible``); rows of ``kind = "3d"`` hold one H36M-17 joint of one mixture
component of a stage's lifting (``x, y, z`` in the lifting's millimetres, ``image_x,
image_y`` = that component's projection into the image, plus the component's ``score,
residual, scale, yaw_rad, capped`` and ``best``, and the joint's posterior covariance
``cov_xx, cov_xy, cov_xz, cov_yy, cov_yz, cov_zz`` in mm^2). Empty cells mean "not
applicable" or NaN (a covariance the lifting did not provide is empty too).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np

from poseviewer.export._io import (
    DEFAULT_FRAME,
    atomic_write_text,
    check_result,
    fit_values,
    in_frame,
)
from poseviewer.export.json_format import stored_image_path
from poseviewer.result import COMPONENT_FIELDS, FIT_FIELDS, EstimateResult
from poseviewer.skeleton import CPM14, H36M17

#: per-component scalar columns, from the field table
_COMP_COLUMNS = tuple(f for f in COMPONENT_FIELDS if f.csv and f.shape == ("K",))
#: per-joint 3 x 3 covariances (upper triangle, row by row), from the field table
_COV_FIELDS = tuple(f for f in COMPONENT_FIELDS if f.csv and f.shape[-2:] == (3, 3))
_UPPER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
_COV_COLUMNS = tuple(f"{f.csv}{'xyz'[a]}{'xyz'[b]}" for f in _COV_FIELDS for a, b in _UPPER)

#: per-fit scalar columns (the best component's judgement, e.g. plausible), on every row of
#: the stage, from the field table
_FIT_COLUMNS = tuple(f for f in FIT_FIELDS if f.csv and f.shape == ())

COLUMNS = (
    "image", "person", "stage", "kind", "component", "best", "lifted", "joint_set",
    "joint_index", "joint", "x", "y", "z", "image_x", "image_y", "confidence", "visible",
) + tuple(f.csv for f in _COMP_COLUMNS) + _COV_COLUMNS + tuple(f.csv for f in _FIT_COLUMNS)


def _num(x: float) -> str:
    x = float(x)
    return repr(x) if math.isfinite(x) else ""


def _cell(x: object) -> object:
    return int(bool(x)) if isinstance(x, (bool, np.bool_)) else _num(x)


def csv_text(result: EstimateResult, image: str | None = None) -> str:
    """The CSV text for one result (header + rows), as it is; ``image``: the image column
    (default: the result's image path)."""
    check_result(result)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    image = (result.image_path if image is None else image) or ""
    blank = [""] * (len(_COMP_COLUMNS) + len(_COV_COLUMNS))
    no_cov = [""] * len(_UPPER)
    for p, person in enumerate(result.persons):
        for stage in person.stages:
            vals = fit_values(stage.fit)
            lifted = "" if vals is None else int(bool(vals[0]["lifted"]))
            judged = [""] * len(_FIT_COLUMNS) if vals is None else [
                "" if vals[0].get(f.name) is None else _cell(vals[0][f.name])
                for f in _FIT_COLUMNS]
            base = [image, p, stage.index]
            for j, name in enumerate(CPM14.joints):
                w.writerow(base + [
                    "2d", "", "", lifted, CPM14.name, j, name, "", "", "",
                    _num(stage.joints_2d[j][0]), _num(stage.joints_2d[j][1]),
                    _num(stage.confidence[j]), int(bool(stage.visible[j])),
                ] + blank + judged)
            if vals is None:
                continue
            fit, comps = vals
            best = int(fit["component"])
            for k in range(comps["score"].shape[0]):
                comp = [_cell(comps[f.name][k]) for f in _COMP_COLUMNS]
                for j, name in enumerate(H36M17.joints):
                    xyz = comps["pose_3d"][k, j]
                    uv = comps["joints_2d"][k, j]
                    cov = []
                    for f in _COV_FIELDS:
                        c = comps.get(f.name)
                        cov += no_cov if c is None else [_num(c[k, j, a, b]) for a, b in _UPPER]
                    w.writerow(base + [
                        "3d", k, int(k == best), lifted, H36M17.name, j, name,
                        _num(xyz[0]), _num(xyz[1]), _num(xyz[2]), _num(uv[0]), _num(uv[1]),
                        "", "",
                    ] + comp + cov + judged)
    return buf.getvalue()


def write_csv(result: EstimateResult, path: str | os.PathLike[str],
              frame: str = DEFAULT_FRAME) -> Path:
    """Write ``result`` as long-format CSV (atomic): 3D poses in ``frame`` ('pelvis',
    default, or 'lifting'), the image column relative to the file's folder."""
    return atomic_write_text(path, csv_text(in_frame(result, frame),
                                            stored_image_path(result.image_path, path)))
