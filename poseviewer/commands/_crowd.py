"""``poseviewer eval-2d --crowd``: the 2D network on crowded scenes composed from the
validation photos (``poseviewer.train2d.crowd``), through the Estimator as a user runs it.

Two paths: every person's box given (the scene's boxes), and the person detector's boxes
(each labelled person matched to the detection whose box overlaps theirs most, IoU >= 0.3;
an unmatched person is missed). Scored per person: limb joints within 0.1 x the person's
labelled extent, and of the wrong joints the share lying on another person's same joint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: A detection matches a labelled person when their boxes' IoU is at least this.
MATCH_IOU = 0.3


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of x0 y0 x1 y1 boxes."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def match_detections(truth: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Per labelled box the index of its detection (greedy by IoU, each used once), or -1."""
    out = np.full(len(truth), -1)
    if not len(found):
        return out
    iou = box_iou(truth, found)
    while True:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] < MATCH_IOU:
            return out
        out[i] = j
        iou[i, :] = -1
        iou[:, j] = -1


def crowd_scenes(args: argparse.Namespace) -> list[Any]:
    """The seeded scenes from the validation split."""
    import cv2

    from poseviewer.train2d.crowd import random_scenes
    from poseviewer.train2d.data import load_annotations, split_indices

    ann = load_annotations(args.data)
    _, val = split_indices(len(ann.names), args.n_val, args.seed)

    def load(row: int) -> np.ndarray:
        path = f"{args.data}/images/{ann.names[row]}"
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {path}")
        return bgr[..., ::-1].copy()

    return list(random_scenes(load, ann.joints, ann.visible, val, args.scenes,
                              seed=args.crowd_seed, people=tuple(args.crowd_people)))


def score_crowd(est: Any, scenes: list[Any], detector: bool) -> dict[str, Any]:
    """Score the Estimator on ``scenes`` with the given boxes or (``detector``) its own."""
    from poseviewer.train2d.crowd import LIMB_JOINTS, CrowdScore, score_scene

    score = CrowdScore()
    extra = 0
    # the plausibility flag against the limb joints a person got wrong (0, 1-2, >= 3)
    flags = {"none wrong": [0, 0], "1-2 wrong": [0, 0], ">= 3 wrong": [0, 0]}
    n_joints = est.backend.skeleton.num_joints
    for sc in scenes:
        res = est.estimate(sc.image, boxes=None if detector else sc.boxes)
        got = np.array([p.final.joints_2d for p in res.persons]).reshape(-1, n_joints, 2)
        odd = np.array([p.implausible for p in res.persons], bool)
        idx = np.arange(len(sc.boxes))
        if detector:
            found = np.array([p.box for p in res.persons]).reshape(-1, 4)
            idx = match_detections(sc.boxes, found)
            pred = np.full((len(sc.boxes), n_joints, 2), np.nan)
            pred[idx >= 0] = got[idx[idx >= 0]]
            extra += len(found) - int((idx >= 0).sum())
        else:
            pred = got
        score_scene(score, sc, pred)
        for i, k in enumerate(idx):
            if k < 0:
                continue
            limbs = [j for j in LIMB_JOINTS if sc.visible[i, j]]
            d = np.linalg.norm(pred[i, limbs] - sc.joints[i, limbs], axis=-1)
            n_wrong = int((d > 0.1 * sc.extent[i]).sum())
            key = "none wrong" if n_wrong == 0 else "1-2 wrong" if n_wrong < 3 else ">= 3 wrong"
            flags[key][0] += int(odd[k])
            flags[key][1] += 1
    d = score.to_dict()
    d["implausible_flag"] = {k: {"flagged": a, "people": b} for k, (a, b) in flags.items()}
    if detector:
        d["unmatched_detections"] = extra
    return d


def run_crowd(args: argparse.Namespace, model: Any) -> int:
    """Compose the scenes, run both paths, print and optionally write the figures."""
    from poseviewer.cnn.prior import TargetPrior
    from poseviewer.estimator import Estimator
    from poseviewer.lifting import load_pose_model

    if not (Path(args.data) / "annotations.npz").is_file():
        print(f"error: LSP-extended not found in {args.data}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    scenes = crowd_scenes(args)
    people = sum(len(s.boxes) for s in scenes)
    print(f"{len(scenes)} crowded scenes, {people} people (seed {args.crowd_seed}; "
          f"composed in {time.perf_counter() - t0:.1f} s)")
    pm = load_pose_model(args.pose_model) if args.pose_model else None
    est = Estimator(model, pm, info={"weights": str(args.weights)},
                    elevation_search=bool(getattr(args, "elevation_search", True)))
    tp = est.target_prior
    est.target_prior = TargetPrior(
        tp.outside if args.prior_outside is None else args.prior_outside,
        tp.neighbour if args.prior_neighbour is None else args.prior_neighbour)
    print(f"target prior: outside {est.target_prior.outside}, neighbour "
          f"{est.target_prior.neighbour}")
    report: dict[str, Any] = {"weights": str(args.weights), "scenes": len(scenes),
                              "people_per_scene": list(args.crowd_people),
                              "target_prior": vars(est.target_prior),
                              "people": people, "seed": args.crowd_seed,
                              "flip_test": bool(model.config.flip_test)}
    flagged: list[tuple[str, dict]] = []
    paths = [("boxes", False)] + ([] if args.no_detector else [("detector", True)])
    runs = [(name, det, est.target_prior) for name, det in paths]
    if args.baseline:
        runs = [(f"{name}, prior off", det, TargetPrior(0.0, 0.0)) for name, det in paths] \
            + runs
    print("\n| path | people | missed | limb joints right | all joints right | "
          "wrong joints taken from a neighbour |\n|---|---:|---:|---:|---:|---:|")
    chosen = est.target_prior
    for name, det, prior in runs:
        est.target_prior = prior
        d = score_crowd(est, scenes, det)
        est.target_prior = chosen
        report[name] = d
        print(f"| {name} | {d['people']} | {d['missed']} | {d['limb_pck']:.3f} "
              f"({d['limb_joints']}) | {d['all_pck']:.3f} ({d['all_joints']}) | "
              f"{d['neighbour_share']:.3f} ({d['from_neighbour']} of {d['wrong']}) |")
        flagged.append((name, d["implausible_flag"]))
    print("\nPeople flagged as implausible 3D poses, by how many of their limb joints are "
          "wrong:")
    for name, fl in flagged:
        print(f"- {name}: " + "; ".join(f"{k}: {v['flagged']} of {v['people']}"
                                        for k, v in fl.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0
