"""Crowded scenes composed from single-person LSP-extended photos, with every person's labels.

LSP-extended labels one person a photo. A crowded scene here is a real background (a strip
of another photo that holds no labelled person) with two to four labelled people pasted
side by side and partly over each other. Each person is cut out of their photo with a soft
mask drawn along their labelled skeleton (thick limbs, torso, head), scaled to a common
size and moved; their labels go through the same scale and shift. A labelled joint that a
person pasted later covers (mask above one half there) counts as hidden.

:func:`compose_scene` does one scene from explicit placements (tested by hand);
:func:`random_scenes` draws placements from a seed, so the set is the same on every run.
Nothing here is stored: scenes are made from ``../shared/data`` when needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from poseviewer.skeleton import CPM14
from poseviewer.train2d.data import person_box

#: Limb joints scored on crowded scenes: elbows, wrists, knees and ankles.
LIMB_JOINTS = tuple(CPM14.index(n) for n in (
    "right_elbow", "right_wrist", "left_elbow", "left_wrist",
    "right_knee", "right_ankle", "left_knee", "left_ankle"))
#: Mask thickness of a limb, as a fraction of the person's extent.
LIMB_WIDTH = 0.13
#: A person's box: the labelled joints' bounding box grown by this fraction of the extent
#: on every side (the head and feet reach past their joints).
BOX_PAD = 0.1
#: Joints a person needs to be pasted.
MIN_JOINTS = 10


@dataclass(frozen=True)
class Placement:
    """Where one person goes: scene = photo * scale + shift."""

    scale: float
    shift: tuple[float, float]


@dataclass
class Scene:
    """One composed scene; P people."""

    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    joints: np.ndarray
    """(P, 14, 2) float64 CPM-14 labels in scene pixels."""
    labelled: np.ndarray
    """(P, 14) bool: labelled in the source photo."""
    visible: np.ndarray
    """(P, 14) bool: labelled and not covered by a person pasted later."""
    boxes: np.ndarray
    """(P, 4) x0, y0, x1, y1: each person's box (labelled joints + ``BOX_PAD``)."""
    extent: np.ndarray
    """(P,) larger side of each person's labelled joints' bounding box, scene pixels."""
    sources: tuple[int, ...]
    """Annotation rows of the people."""


def person_mask(joints: np.ndarray, labelled: np.ndarray, shape: tuple[int, int],
                width: float) -> np.ndarray:
    """(H, W) float32 0..1 soft mask of a person drawn from their labelled joints: each
    labelled bone a line ``width`` px thick, the torso polygon, a head disc; feathered."""
    h, w = shape
    m = np.zeros((h, w), np.uint8)
    t = max(int(round(width)), 1)
    for a, b in CPM14.bones:
        if labelled[a] and labelled[b]:
            cv2.line(m, tuple(int(round(v)) for v in joints[a]),
                     tuple(int(round(v)) for v in joints[b]), 255, t, cv2.LINE_AA)
    torso = [CPM14.index(n) for n in ("right_shoulder", "left_shoulder", "left_hip",
                                      "right_hip")]
    if labelled[torso].all():
        cv2.fillPoly(m, [np.round(joints[torso]).astype(np.int32)], 255, cv2.LINE_AA)
    head, neck = CPM14.index("head_top"), CPM14.index("neck")
    if labelled[head] and labelled[neck]:
        c = (joints[head] + joints[neck]) / 2
        r = max(int(round(np.linalg.norm(joints[head] - joints[neck]) * 0.6)), t // 2)
        cv2.circle(m, (int(round(c[0])), int(round(c[1]))), r, 255, -1, cv2.LINE_AA)
    for j in np.flatnonzero(labelled):  # every labelled joint inside the mask
        cv2.circle(m, (int(round(joints[j, 0])), int(round(joints[j, 1]))), t // 2, 255, -1)
    k = 2 * max(int(round(width / 4)), 1) + 1
    return cv2.GaussianBlur(m.astype(np.float32) / 255.0, (k, k), 0)


def compose_scene(background: np.ndarray, photos: Sequence[np.ndarray],
                  joints: np.ndarray, labelled: np.ndarray, placements: Sequence[Placement],
                  order: Sequence[int] | None = None,
                  sources: Sequence[int] | None = None) -> Scene:
    """Paste ``photos`` (RGB uint8) onto ``background`` (RGB uint8, the scene's size).

    joints (P, 14, 2) CPM-14 in each photo's pixels, labelled (P, 14); each person is moved
    by their placement; ``order`` is the pasting order (later ones on top; default 0..P-1).
    """
    scene = background.astype(np.float32).copy()
    h, w = scene.shape[:2]
    n = len(photos)
    order = list(range(n)) if order is None else list(order)
    if sorted(order) != list(range(n)) or len(placements) != n:
        raise ValueError("order and placements must cover every person once")
    moved = np.empty((n, CPM14.num_joints, 2))
    masks = []
    extent = np.empty(n)
    boxes = np.empty((n, 4))
    for i, pl in enumerate(placements):
        a = np.array([[pl.scale, 0.0, pl.shift[0]], [0.0, pl.scale, pl.shift[1]]])
        moved[i] = joints[i] @ a[:, :2].T + a[:, 2]
        lab = labelled[i]
        lo, hi = moved[i][lab].min(0), moved[i][lab].max(0)
        extent[i] = float((hi - lo).max())
        boxes[i] = np.r_[lo - BOX_PAD * extent[i], hi + BOX_PAD * extent[i]]
        masks.append((a, person_mask(moved[i], lab, (h, w), LIMB_WIDTH * extent[i])))
    covered = np.zeros((n, CPM14.num_joints), bool)
    for k, i in enumerate(order):
        a, mask = masks[i]
        img = cv2.warpAffine(photos[i], a, (w, h), flags=cv2.INTER_AREA
                             if a[0, 0] < 1 else cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        inside = cv2.warpAffine(np.ones(photos[i].shape[:2], np.float32), a, (w, h),
                                flags=cv2.INTER_LINEAR, borderValue=0.0)
        alpha = (mask * inside)[..., None]
        scene = scene * (1 - alpha) + img * alpha
        for earlier in order[:k]:  # people below this one lose the joints it covers
            xy = np.round(moved[earlier]).astype(int)
            ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
            a_at = np.zeros(len(xy))
            a_at[ok] = alpha[xy[ok, 1], xy[ok, 0], 0]
            covered[earlier] |= a_at > 0.5
    return Scene(image=np.clip(np.round(scene), 0, 255).astype(np.uint8), joints=moved,
                 labelled=labelled.copy(), visible=labelled & ~covered, boxes=boxes,
                 extent=extent, sources=tuple(sources) if sources is not None
                 else tuple(range(n)))


def background_strip(photo: np.ndarray, joints: np.ndarray, labelled: np.ndarray,
                     margin: float = 0.25) -> np.ndarray | None:
    """The largest strip (left, right, top or bottom) of ``photo`` that holds none of its
    labelled person (their joints' box grown by ``margin`` x extent), or None if every
    strip is under 32 px."""
    centre, ext = person_box(joints, labelled)
    lo = joints[labelled].min(0) - margin * ext
    hi = joints[labelled].max(0) + margin * ext
    h, w = photo.shape[:2]
    x0, y0 = int(max(lo[0], 0)), int(max(lo[1], 0))
    x1, y1 = int(min(np.ceil(hi[0]), w)), int(min(np.ceil(hi[1]), h))
    strips = [photo[:, :x0], photo[:, x1:], photo[:y0], photo[y1:]]
    best = max(strips, key=lambda s: s.shape[0] * s.shape[1] if min(s.shape[:2]) >= 32 else 0)
    return best if min(best.shape[:2]) >= 32 else None


def random_scenes(load_photo, joints: np.ndarray, labelled: np.ndarray, rows: np.ndarray,
                  count: int, seed: int = 22, height: float = 150.0,
                  people: tuple[int, int] = (2, 4)) -> Iterator[Scene]:
    """``count`` scenes from annotation ``rows`` (CPM-14 ``joints``/``labelled`` of every
    row; ``load_photo(row)`` -> RGB uint8), the same for the same seed: ``people`` (two to
    four by default; one gives the single-person reference on the same kind of scene)
    of extent ``height`` x U(0.85, 1.15), each overlapping the one before by 0-40 % of the
    narrower one's width, on the background strip of another row's photo."""
    rng = np.random.default_rng(seed)
    usable = np.array([r for r in rows if labelled[r].sum() >= MIN_JOINTS])
    if len(usable) < 5:
        raise ValueError("need at least 5 photos with enough labelled joints")
    for _ in range(count):
        n = int(rng.integers(people[0], people[1] + 1))
        chosen = rng.choice(usable, n, replace=False)
        placements, widths = [], []
        x = 0.0
        for k, r in enumerate(chosen):
            lab = labelled[r]
            centre, ext = person_box(joints[r], lab)
            s = height * rng.uniform(0.85, 1.15) / ext
            half_w = max(float(np.ptp(joints[r][lab, 0])) * s / 2, 0.2 * height)
            if k:
                overlap = rng.uniform(0.0, 0.4) * 2 * min(half_w, widths[-1])
                x += widths[-1] + half_w - overlap
            widths.append(half_w)
            dy = rng.uniform(-0.1, 0.1) * height
            placements.append((s, x, dy, centre))
        margin = 0.35 * height
        xs = [p[1] for p in placements]
        width = int(np.ceil(max(xs) - min(xs) + 2 * (max(widths) + margin)))
        scene_h = int(np.ceil(1.0 * height + 2 * margin))
        x_off = max(widths) + margin - min(xs)
        final = [Placement(s, (x + x_off - s * c[0], scene_h / 2 + dy - s * c[1]))
                 for s, x, dy, c in placements]
        background = None
        while background is None:
            b = int(rng.choice(np.setdiff1d(rows, chosen)))
            strip = background_strip(load_photo(b), joints[b], labelled[b])
            if strip is not None:
                background = cv2.resize(strip, (width, scene_h), interpolation=cv2.INTER_LINEAR)
        order = rng.permutation(n)
        yield compose_scene(background, [load_photo(int(r)) for r in chosen],
                            joints[chosen], labelled[chosen], final, order,
                            sources=[int(r) for r in chosen])


@dataclass
class CrowdScore:
    """Crowded-scene figures over every person (counts; fractions via properties)."""

    limb_right: int = 0
    limb_total: int = 0
    all_right: int = 0
    all_total: int = 0
    wrong: int = 0
    """Wrong joints (all 14) of people who were analysed."""
    from_neighbour: int = 0
    """Wrong joints within the tolerance of another person's same joint."""
    people: int = 0
    missed: int = 0
    """People without a matched detection (their joints count as wrong, not as taken)."""

    @property
    def limb_pck(self) -> float:
        return self.limb_right / max(self.limb_total, 1)

    @property
    def all_pck(self) -> float:
        return self.all_right / max(self.all_total, 1)

    @property
    def neighbour_share(self) -> float:
        return self.from_neighbour / max(self.wrong, 1)

    def to_dict(self) -> dict:
        """JSON-friendly counts and fractions."""
        return {"people": self.people, "missed": self.missed,
                "limb_pck": round(self.limb_pck, 4), "limb_joints": self.limb_total,
                "all_pck": round(self.all_pck, 4), "all_joints": self.all_total,
                "wrong": self.wrong, "from_neighbour": self.from_neighbour,
                "neighbour_share": round(self.neighbour_share, 4)}


def score_scene(score: CrowdScore, scene: Scene, pred: np.ndarray | None,
                alpha: float = 0.1) -> None:
    """Add one scene to ``score``. ``pred`` (P, J, 2) scene pixels, NaN rows for people
    not analysed (missed). A joint is right within ``alpha`` x its person's extent; a wrong
    one is "taken from a neighbour" when it lies within ``alpha`` x the neighbour's extent
    of another person's same labelled joint."""
    n, n_joints = scene.joints.shape[:2]
    limbs = np.zeros(n_joints, bool)
    limbs[list(LIMB_JOINTS)] = True
    for i in range(n):
        vis = scene.visible[i]
        score.people += 1
        p = None if pred is None else pred[i]
        if p is None or not np.isfinite(p).all():
            score.missed += 1
            score.limb_total += int((vis & limbs).sum())
            score.all_total += int(vis.sum())
            continue
        d = np.linalg.norm(p - scene.joints[i], axis=-1)
        right = vis & (d <= alpha * scene.extent[i])
        wrong = vis & ~right
        score.limb_right += int((right & limbs).sum())
        score.limb_total += int((vis & limbs).sum())
        score.all_right += int(right.sum())
        score.all_total += int(vis.sum())
        score.wrong += int(wrong.sum())
        taken = np.zeros(n_joints, bool)
        for k in range(n):
            if k == i:
                continue
            dk = np.linalg.norm(p - scene.joints[k], axis=-1)
            taken |= scene.labelled[k] & (dk <= alpha * scene.extent[k])
        score.from_neighbour += int((wrong & taken).sum())
