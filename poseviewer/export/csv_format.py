"""Long-format CSV: one row per person / stage / (component) / joint. See docs/export-format.md.

Rows of ``kind = "2d"`` hold the CNN's CPM-14 joints of a stage (``image_x, image_y``,
``confidence``, ``visible``); rows of ``kind = "3d"`` hold one H36M-17 joint of one mixture
component of a stage's lifting (``x, y, z`` in the lifting's millimetres, ``image_x,
image_y`` = that component's projection into the image, plus the component's ``score,
residual, scale, yaw_rad, capped`` and ``best``). Empty cells mean "not applicable" or NaN.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from poseviewer.export._io import atomic_write_text, check_result, fit_arrays
from poseviewer.result import EstimateResult
from poseviewer.skeleton import CPM14, H36M17

COLUMNS = (
    "image", "person", "stage", "kind", "component", "best", "lifted", "joint_set",
    "joint_index", "joint", "x", "y", "z", "image_x", "image_y", "confidence", "visible",
    "score", "residual", "scale", "yaw_rad", "capped",
)


def _num(x: float) -> str:
    x = float(x)
    return repr(x) if math.isfinite(x) else ""


def csv_text(result: EstimateResult) -> str:
    """The CSV text for one result (header + rows)."""
    check_result(result)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    image = result.image_path or ""
    for p, person in enumerate(result.persons):
        for stage in person.stages:
            fa = fit_arrays(stage)
            lifted = "" if fa is None else int(bool(fa["lifted"]))
            base = [image, p, stage.index]
            for j, name in enumerate(CPM14.joints):
                w.writerow(base + [
                    "2d", "", "", lifted, CPM14.name, j, name, "", "", "",
                    _num(stage.joints_2d[j][0]), _num(stage.joints_2d[j][1]),
                    _num(stage.confidence[j]), int(bool(stage.visible[j])),
                    "", "", "", "", "",
                ])
            if fa is None:
                continue
            best = int(fa["component"])
            for k in range(fa["score"].shape[0]):
                comp = [_num(fa["score"][k]), _num(fa["residual"][k]), _num(fa["scale"][k]),
                        _num(fa["yaw"][k]), int(bool(fa["capped"][k]))]
                for j, name in enumerate(H36M17.joints):
                    xyz = fa["comp_pose_3d"][k, j]
                    uv = fa["comp_joints_2d"][k, j]
                    w.writerow(base + [
                        "3d", k, int(k == best), lifted, H36M17.name, j, name,
                        _num(xyz[0]), _num(xyz[1]), _num(xyz[2]), _num(uv[0]), _num(uv[1]),
                        "", "",
                    ] + comp)
    return buf.getvalue()


def write_csv(result: EstimateResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` as long-format CSV (atomic)."""
    return atomic_write_text(path, csv_text(result))
