"""Ship a trained run: write the default weights (with the inference settings the Estimator
reads), and the model card from the evaluation report and the training log."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.atomic import atomic_write_text
from poseviewer.cnn import LiftingCPM, count_parameters, load_cpm, save_cpm
from poseviewer.skeleton import CPM14
from poseviewer.train2d.loop import read_log


def ship_weights(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                 metadata: dict[str, Any], box_fill: float = 0.7,
                 joint_reading: str = "release") -> LiftingCPM:
    """Copy a checkpoint's weights to ``dst`` with the inference settings set in its config.

    ``box_fill``: a person box's longer side covers this fraction of the 128 px crop (the
    training crops put the labelled joints' extent at 1 / 1.6 = 0.625; detector boxes carry
    some margin). ``joint_reading='release'``: maps resized to the crop, then argmax (the
    reading the evaluation uses).
    """
    trained = load_cpm(src)
    cfg = dataclasses.replace(trained.config, box_fill=box_fill, joint_reading=joint_reading)
    model = LiftingCPM(cfg.validate())
    model.load_state_dict(trained.state_dict())
    save_cpm(model, dst, metadata=metadata)
    return model


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def model_card(report: dict[str, Any], run_dir: str | os.PathLike[str], model: LiftingCPM,
               extra: dict[str, str]) -> str:
    """Markdown model card (architecture, data, recipe, PCK tables, timing, licence)."""
    run = Path(run_dir)
    recs = read_log(run / "log.jsonl")
    tcfg = json.loads((run / "train_config.json").read_text())
    cfg = model.config
    lines = [f"# `cpm_default.safetensors`: the default 2D network ({cfg.name})", ""]
    lines += [extra.get("summary", ""), ""]
    lines += ["## Architecture", "",
              f"The paper's design at CPU size: a multi-stage convolutional pose machine, "
              f"{cfg.num_stages} stages, {count_parameters(model):,} parameters "
              f"({Path(extra['weights']).stat().st_size / 2**20:.1f} MB float32).", "",
              f"- Input: {cfg.input_size} x {cfg.input_size} RGB crop, pixel / 255 - 0.5; "
              f"outside the photo 0 (mid-grey). Maps: {cfg.map_size} x {cfg.map_size} "
              f"(stride {cfg.stride}), {cfg.num_joints} joints + background.",
              "- Trunk: " + ", ".join(f"{n} {k}x{k}/{c}" if n != "pool" else "pool"
                                      for n, k, c in cfg.trunk) + " (ReLU after every conv).",
              "- Stage 1: " + ", ".join(f"{n} {k}x{k}/{c}" for n, k, c in cfg.stage1) + ".",
              f"- Stages 2-{cfg.num_stages}: input [previous stage's fused maps, trunk "
              f"features, pooled centre map]; {cfg.stage_depth} x {cfg.stage_kernel}x"
              f"{cfg.stage_kernel}/{cfg.stage_width} convs, 1x1/{cfg.stage_hidden}, "
              f"1x1/{cfg.num_maps}.",
              f"- Fusion (every stage): argmax joints -> lifted by our 3D model "
              f"(`pose3d_default.safetensors`) -> Gaussian projected maps (sigma "
              f"{cfg.fusion.sigma} map px) -> f_t = w_t b_t + (1 - w_t) bhat_t with one learned "
              f"w_t per stage and map channel ({cfg.fusion.granularity}); background: "
              f"{cfg.fusion.background}; people with < {cfg.fusion.min_visible} visible joints "
              "pass b_t unchanged.",
              f"- Inference settings: box_fill {cfg.box_fill} (a person box's longer side "
              f"covers this fraction of the crop), joint reading '{cfg.joint_reading}'.", ""]
    lines += ["## Data", "",
              "LSP-extended (`../shared/data/lspet`: 9,000 of the 10,000 photos, Flickr, "
              "athletics, gymnastics and parkour; 14 joints, crowd-sourced and noisy). "
              "LSP order mapped to CPM-14 with `poseviewer.skeleton.LSP_TO_CPM`; unlabelled "
              "joints (v = 0) are masked in the loss and excluded from the metrics.", "",
              f"Validation split: {tcfg['n_val']} images, fixed: "
              f"`numpy.random.default_rng({tcfg['seed']}).permutation(9000)[:{tcfg['n_val']}]` "
              "over the rows of `annotations.npz` "
              "(`poseviewer.train2d.data.split_indices`); the other 8,000 train. The list of "
              "file names is saved with the run (`split.json`).", ""]
    fusion_recs = [r for r in recs if r.get("fusion")]
    total_train = sum(r["train_seconds"] for r in recs) / 60
    total_val = sum(r["val_seconds"] for r in recs) / 60
    lines += ["## Recipe (`poseviewer train-2d`)", "",
              extra.get("command", ""), "",
              "- Crops: every photo pre-cropped once into a uint8 cache (square box of 2.2 x "
              "the labelled joints' extent, 192 px); per sample one affine warp to the "
              "128 px input of a 1.6 x box: scale x0.75-1.25 (log-uniform), rotation over "
              "the full circle with probability 0.5 else +-30 degrees, shift +-8 %, "
              "horizontal flip (left/right joints swapped) with probability 0.5, colour "
              "jitter (brightness, contrast, channel gains, 10 % grey).",
              f"- Targets: Gaussians (sigma {tcfg['sigma']} map px) at the labelled joints, "
              "background = 1 - max; loss: squared error summed over maps, averaged over "
              "the batch, on every stage (intermediate supervision), unlabelled joints "
              "masked; in the fusion epochs the loss applies to the fused maps.",
              f"- Adam, batch {tcfg['batch_size']}, learning rate {tcfg['lr']} with "
              f"{tcfg['warmup_steps']} warm-up steps then cosine decay to {tcfg['min_lr']} "
              f"over a budget of {tcfg['time_budget_min']} minutes of training time; the "
              f"last {len(fusion_recs)} epoch(s) (from {int(100 * (1 - tcfg['fusion_fraction']))}"
              " % of the budget) with our 3D model inside the loop (fusion on).",
              f"- Run: {len(recs)} epochs ({recs[-1]['step']} steps, "
              f"{recs[-1]['step'] * tcfg['batch_size']:,} samples), {total_train:.0f} min "
              f"training + {total_val:.0f} min validation, 1 torch thread, `nice -n 5`, on a "
              "2-core machine shared with other work (see below).", "",
              "![training loss and validation PCK](cpm_training.png)", "",
              "| epoch | fusion | batches | loss | val PCK@0.2 stage 1..T (fusion off) | "
              "with fusion |", "|---:|:---:|---:|---:|---|---|"]
    for r in recs:
        lines.append(f"| {r['epoch']} | {'yes' if r['fusion'] else ''} | {r['batches']} | "
                     f"{r['loss']:.1f} | {' / '.join(_pct(v) for v in r['val_pck'])} | "
                     f"{' / '.join(_pct(v) for v in r.get('val_pck_fusion', []))} |")
    lines += ["", "## Validation accuracy (`poseviewer eval-2d`)", "",
              "PCK@0.2: a joint is correct within 0.2 x torso size (left shoulder to right "
              "hip) of its label; labelled joints only, people with both torso joints "
              "labelled; crops as in training without augmentation (1.6 x the labels' box), "
              "so this measures the network, not a detector.", ""]
    for key, title in (("plain", "fusion off (plain CPM)"), ("fusion", "fusion on")):
        if key not in report:
            continue
        rep = report[key]
        lines += [f"### {title}: {rep['people']} people", "", *pck_table(rep)]
        lines += ["", f"Time per crop (batch 1, 1 thread, busy machine): "
                  f"{1000 * rep['seconds_per_crop']:.0f} ms.", ""]
    lines += [extra.get("discussion", ""), ""]
    lines += ["## Licence notes", "",
              "The weights are ours (MIT, like the project), trained from scratch (no "
              "pre-trained weights, no teacher). The training data, LSP-extended (Johnson & "
              "Everingham, CVPR 2011), are Flickr photographs released for research use; "
              "the photos themselves are not redistributed. The 3D model used in the "
              "fusion epochs is our own `pose3d_default.safetensors` (trained on Human3.6M "
              "poses, research use; see its card), never the authors' released model.", ""]
    return "\n".join(lines)


def pck_table(rep: dict[str, Any]) -> list[str]:
    """Markdown rows: PCK (%) per joint and stage, and the mean, from an eval report part
    (``per_joint_per_stage``, ``mean_per_stage``)."""
    per = rep["per_joint_per_stage"]
    t = len(per)
    rows = ["| joint | " + " | ".join(f"stage {s + 1}" for s in range(t)) + " |",
            "|---|" + "---:|" * t]
    for name in CPM14.joints:
        rows.append(f"| {name} | " + " | ".join(_pct(per[s][name]) for s in range(t)) + " |")
    rows.append("| **mean** | " + " | ".join(f"**{_pct(v)}**" for v in rep["mean_per_stage"])
                + " |")
    return rows


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically (``poseviewer.atomic``: temp file in the same folder, replace)."""
    atomic_write_text(path, text)


def calibrate_visibility(confidence: np.ndarray, correct: np.ndarray, evaluated: np.ndarray,
                         min_right_kept: float = 0.9) -> dict[str, Any]:
    """The visibility threshold that best separates right from wrong joints.

    ``confidence``, ``correct`` (PCK), ``evaluated``: (N, J) for one stage. Among labelled
    joints, "visible" should keep right joints and drop wrong ones: the threshold maximises
    Youden's J = (right joints kept) - (wrong joints kept) among the thresholds that keep at
    least ``min_right_kept`` of the right joints (the lifting needs joints: dropping a right
    one costs more than keeping a wrong one). Returns the threshold and the kept fractions,
    for the model card.
    """
    c = confidence[evaluated]
    ok = correct[evaluated]
    cands = np.unique(np.quantile(c, np.linspace(0, 0.6, 121)))
    best = None
    for t in cands:
        keep = c > t
        tpr = keep[ok].mean() if ok.any() else 0.0
        fpr = keep[~ok].mean() if (~ok).any() else 0.0
        if tpr < min_right_kept:
            continue
        if best is None or tpr - fpr > best["youden"]:
            best = {"threshold": float(t), "youden": float(tpr - fpr),
                    "right_kept": float(tpr), "wrong_kept": float(fpr)}
    if best is None:
        raise ValueError(f"no threshold keeps {min_right_kept:.0%} of the right joints")
    best["min_right_kept"] = min_right_kept
    keep = c > best["threshold"]
    best["pck_of_kept"] = float(ok[keep].mean()) if keep.any() else 0.0
    best["pck_all"] = float(ok.mean())
    best["joints"] = int(c.size)
    return best


def left_right_diagnostic(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray,
                          margin: int = 3, alpha: float = 0.2) -> dict[str, Any]:
    """How much of the PCK error is a left/right mix-up between prediction and label.

    ``pred`` (N, J, 2) one stage's joints, ``gt``/``visible`` the labels. An image counts
    as mirrored when PCK against its left/right-swapped labels gets at least ``margin``
    more joints right than against the labels as given: either the network mixed up the
    sides or the crowd-sourced label did (LSP-extended's labels are known to hold such
    mix-ups). Returns the count and share of such images and the PCK with those images'
    labels swapped (a diagnostic upper bound, not a score).
    """
    from poseviewer.skeleton import CPM14
    from poseviewer.train2d.evaluate import pck

    perm = CPM14.flip_permutation()
    c1, e1 = pck(pred, gt, visible, alpha)
    c2, _ = pck(pred, gt[:, perm], visible[:, perm], alpha)
    n1, n2 = c1.sum(1), c2.sum(1)
    mirrored = n2 >= n1 + margin
    best = np.where(mirrored[:, None], c2, c1)
    return {"images": int(len(gt)), "mirrored": int(mirrored.sum()),
            "mirrored_share": float(mirrored.mean()) if len(gt) else 0.0,
            "margin": margin, "pck": float(c1.sum() / max(e1.sum(), 1)),
            "pck_swapped": float(best.sum() / max(e1.sum(), 1))}
