"""Joint sets as data: names, order, bones, left/right, colours and the mappings between them.

Every other module (lifting, CNN, training, viewer, exporters) reads skeletons from here;
nothing else spells out joint orders.

Joint sets
----------
``CPM14``  the 14 joints the CNN predicts (MPII/LSP style, the release's order).
``H36M17`` the 17 joints of the 3D pose model (Human3.6M subset, the release's order).
``LSP14``  the 14 joints of the LSP / LSP-extended annotation files (another order).
``COCO17`` the COCO keypoint set, for exporting 2D joints to COCO tools.

"Left" and "right" are always the person's own left and right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Colour = tuple[float, float, float]

#: Side colours (RGB, 0..1) used by every view: person's left, right, and centre line.
SIDE_COLOURS: dict[str, Colour] = {
    "left": (0.20, 0.55, 1.00),
    "right": (1.00, 0.35, 0.25),
    "centre": (0.35, 0.85, 0.35),
}


@dataclass(frozen=True)
class Skeleton:
    """A named joint set: joint names in order, bones as (parent, child) index pairs."""

    name: str
    joints: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    #: Mirror pairs (left/right) for horizontal flips.
    flip_pairs: tuple[tuple[int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.joints)
        if len(set(self.joints)) != n:
            dup = sorted({j for j in self.joints if self.joints.count(j) > 1})
            raise ValueError(f"skeleton {self.name}: joint names must be unique, repeated: {dup}")
        for what, pairs in (("bone", self.bones), ("flip pair", self.flip_pairs)):
            for a, b in pairs:
                if not (0 <= a < n and 0 <= b < n):
                    raise ValueError(f"skeleton {self.name}: {what} ({a}, {b}) is outside "
                                     f"the {n} joints")
        for j in (*self.left, *self.right):
            if not 0 <= j < n:
                raise ValueError(f"skeleton {self.name}: side joint {j} is outside the {n} joints")

    @property
    def num_joints(self) -> int:
        """Number of joints."""
        return len(self.joints)

    def index(self, name: str) -> int:
        """Index of the joint called ``name``."""
        return self.joints.index(name)

    def side(self, j: int) -> str:
        """'left', 'right' or 'centre' for joint ``j``."""
        if j in self.left:
            return "left"
        if j in self.right:
            return "right"
        return "centre"

    def joint_colours(self) -> np.ndarray:
        """(J, 3) RGB colours in 0..1, by side."""
        return np.array([SIDE_COLOURS[self.side(j)] for j in range(self.num_joints)])

    def bone_colours(self) -> np.ndarray:
        """(B, 3) RGB colours in 0..1: a bone takes the side of its child joint."""
        return np.array([SIDE_COLOURS[self.side(c)] for _, c in self.bones])

    def flip_permutation(self) -> np.ndarray:
        """Index array that swaps left and right joints (for horizontal flips)."""
        perm = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def parents(self) -> np.ndarray:
        """(J,) parent index of each joint, -1 for the root. Needs a tree of bones."""
        par = np.full(self.num_joints, -1, dtype=np.int64)
        for a, b in self.bones:
            if par[b] != -1:
                raise ValueError(f"{self.name}: joint {self.joints[b]} has two parents")
            par[b] = a
        if int((par == -1).sum()) != 1:
            raise ValueError(f"{self.name}: bones do not form a single tree")
        for j in range(self.num_joints):  # every joint reaches the root: no cycle
            seen, k = 0, j
            while par[k] != -1:
                k, seen = int(par[k]), seen + 1
                if seen > self.num_joints:
                    raise ValueError(f"{self.name}: bones form a cycle through "
                                     f"{self.joints[j]}")
        return par


CPM14 = Skeleton(
    name="cpm14",
    joints=(
        "head_top", "neck",
        "right_shoulder", "right_elbow", "right_wrist",
        "left_shoulder", "left_elbow", "left_wrist",
        "right_hip", "right_knee", "right_ankle",
        "left_hip", "left_knee", "left_ankle",
    ),
    bones=(
        (1, 0), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7),
        (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    ),
    left=(5, 6, 7, 11, 12, 13),
    right=(2, 3, 4, 8, 9, 10),
    flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13)),
)

H36M17 = Skeleton(
    name="h36m17",
    joints=(
        "pelvis", "right_hip", "right_knee", "right_ankle",
        "left_hip", "left_knee", "left_ankle",
        "spine", "thorax", "neck_nose", "head",
        "left_shoulder", "left_elbow", "left_wrist",
        "right_shoulder", "right_elbow", "right_wrist",
    ),
    bones=(
        (0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 9), (9, 10),
        (8, 11), (11, 12), (12, 13), (8, 14), (14, 15), (15, 16),
    ),
    left=(4, 5, 6, 11, 12, 13),
    right=(1, 2, 3, 14, 15, 16),
    flip_pairs=((1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16)),
)

LSP14 = Skeleton(
    name="lsp14",
    joints=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "right_wrist", "right_elbow", "right_shoulder",
        "left_shoulder", "left_elbow", "left_wrist",
        "neck", "head_top",
    ),
    bones=(
        (12, 13), (12, 8), (8, 7), (7, 6), (12, 9), (9, 10), (10, 11),
        (12, 2), (2, 1), (1, 0), (12, 3), (3, 4), (4, 5),
    ),
    left=(3, 4, 5, 9, 10, 11),
    right=(0, 1, 2, 6, 7, 8),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
)

COCO17 = Skeleton(
    name="coco17",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    bones=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
        (3, 5), (4, 6),
    ),
    left=(1, 3, 5, 7, 9, 11, 13, 15),
    right=(2, 4, 6, 8, 10, 12, 14, 16),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
)


def mapping(src: Skeleton, dst: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Joints shared by name: ``(dst_idx, src_idx)`` so that ``out[:, dst_idx] = x[:, src_idx]``."""
    pairs = [(d, src.index(n)) for d, n in enumerate(dst.joints) if n in src.joints]
    dst_idx = np.array([p[0] for p in pairs], dtype=np.int64)
    src_idx = np.array([p[1] for p in pairs], dtype=np.int64)
    return dst_idx, src_idx


#: CPM-14 -> H36M-17 as the 3D model uses it: H36M slot ``CPM_TO_H36M_SLOTS[i]`` takes CPM
#: joint ``CPM_TO_H36M_SOURCES[i]``. The CPM neck lands on the thorax, the head top on the
#: head; H36M pelvis, spine and neck/nose are never observed.
CPM_TO_H36M_SLOTS = np.array([1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16], dtype=np.int64)
CPM_TO_H36M_SOURCES = np.array([8, 9, 10, 11, 12, 13, 1, 0, 5, 6, 7, 2, 3, 4], dtype=np.int64)

#: LSP-14 -> CPM-14: ``cpm = lsp[LSP_TO_CPM]``.
LSP_TO_CPM = np.array([LSP14.index(n) for n in CPM14.joints], dtype=np.int64)

#: CPM-14 -> COCO-17 by name (shoulders, elbows, wrists, hips, knees, ankles).
CPM_TO_COCO_DST, CPM_TO_COCO_SRC = mapping(CPM14, COCO17)


def cpm_to_h36m(x: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Place CPM-14 values (..., 14, D) into H36M-17 slots (..., 17, D); others get ``fill``."""
    x = np.asarray(x)
    out = np.full(x.shape[:-2] + (17,) + x.shape[-1:], fill, dtype=x.dtype)
    out[..., CPM_TO_H36M_SLOTS, :] = x[..., CPM_TO_H36M_SOURCES, :]
    return out


#: CPM-14 -> H36M-17 slot of every CPM joint: ``CPM_TO_H36M[c]`` is the H36M joint that CPM
#: joint ``c`` is observed as (every CPM joint has one), so ``h36m[..., CPM_TO_H36M, :]``
#: reads the CPM joints back out of H36M-17 poses.
CPM_TO_H36M = np.empty(14, dtype=np.int64)
CPM_TO_H36M[CPM_TO_H36M_SOURCES] = CPM_TO_H36M_SLOTS


def h36m_to_cpm(x: Any) -> Any:
    """H36M-17 values (..., 17, D) -> CPM-14 (..., 14, D): the inverse of :func:`cpm_to_h36m`.

    Works on numpy arrays and torch tensors (returns the same kind, on the same device).
    """
    if not hasattr(x, "index_select"):  # a torch tensor is indexed as it is (no torch here)
        x = np.asarray(x)
    if x.ndim < 2 or x.shape[-2] != 17:
        raise ValueError(f"h36m_to_cpm: expected (..., 17, D), got {tuple(x.shape)}")
    return x[..., CPM_TO_H36M, :]


def finite_visible(joints: Any, visible: Any) -> np.ndarray:
    """The visibility that every reader, importer, estimator and exporter keeps: a joint is
    visible only when it is marked visible and both its coordinates are finite (a NaN or
    infinite joint is never visible). ``joints`` (..., J, 2), ``visible`` (..., J) -> bool."""
    return np.asarray(visible, dtype=bool) & np.isfinite(np.asarray(joints, dtype=np.float64)
                                                          ).all(axis=-1)


SKELETONS: dict[str, Skeleton] = {s.name: s for s in (CPM14, H36M17, LSP14, COCO17)}
