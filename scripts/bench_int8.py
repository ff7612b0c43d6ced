"""The 2D network's forward pass in fp32 and int8 (``poseviewer.cnn.int8``), and optionally
the trunk under ``torch.compile``: CPU time of one thread (``time.thread_time``), fp32 and
int8 calls interleaved, so that a shared machine's load skews the ratio less than wall
time would.

    .venv/bin/python scripts/bench_int8.py [--repeats 6] [--batch 1 5] [--compile]

Prints the median CPU ms per call of each part (stage 1 and a refinement stage's head, the
whole single-pass forward) and the fp32 / int8 ratio; the one-off cost of turning int8 on
(loading the shipped calibration); with ``--compile`` the trunk eager vs compiled (inductor,
needs a C++ compiler; the first call compiles, which is timed too).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poseviewer.cnn import load_cpm  # noqa: E402
from poseviewer.cnn.int8 import attach_int8, calibration_path, load_int8  # noqa: E402
from poseviewer.paths import DEFAULT_CNN  # noqa: E402


def cpu_ms(f: Callable[[], object], n: int) -> list[float]:
    """CPU milliseconds of this thread for each of ``n`` calls."""
    out = []
    with torch.inference_mode():
        for _ in range(n):
            t0 = time.thread_time()
            f()
            out.append(1000 * (time.thread_time() - t0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=6, help="rounds of 5 calls each")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 5], help="crops per call")
    ap.add_argument("--compile", action="store_true", help="also the trunk under torch.compile")
    args = ap.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    torch.set_num_threads(1)
    model = load_cpm(DEFAULT_CNN).eval()
    model.set_flip_test(False)
    c0 = time.process_time()
    parts = load_int8(model, calibration_path(DEFAULT_CNN))
    print(f"turning int8 on (load + quantise): {time.process_time() - c0:.2f} s CPU")
    maps = model.config.num_maps
    for batch in args.batch:
        x = (torch.rand(batch, 3, 192, 192) - 0.5).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            feat = model.trunk(x)
        inp = torch.cat([torch.rand(batch, maps, *feat.shape[-2:]), feat], 1) \
            .contiguous(memory_format=torch.channels_last)

        def head(names: list[str], z: torch.Tensor, on: bool) -> Callable[[], object]:
            return lambda: (attach_int8(model, parts if on else None), model._head(names, z))

        def forward(on: bool, x: torch.Tensor = x) -> Callable[[], object]:
            return lambda: (attach_int8(model, parts if on else None), model(x))

        tests = {"stage 1 head": (head(model._stage1, feat, False),
                                  head(model._stage1, feat, True)),
                 "stage 2 head": (head(model._stages[0], inp, False),
                                  head(model._stages[0], inp, True)),
                 "forward (single pass)": (forward(False), forward(True))}
        print(f"\nbatch {batch}: median CPU ms per call (fp32 / int8 / ratio)")
        for name, (f32, i8) in tests.items():
            a: list[float] = []
            b: list[float] = []
            cpu_ms(f32, 2)
            cpu_ms(i8, 2)
            for _ in range(args.repeats):
                a += cpu_ms(f32, 5)
                b += cpu_ms(i8, 5)
            print(f"  {name}: {np.median(a):.1f} / {np.median(b):.1f} / "
                  f"{np.median(a) / np.median(b):.2f}x")
    attach_int8(model, None)
    if args.compile:
        x = (torch.rand(1, 3, 192, 192) - 0.5).contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        compiled = torch.compile(model.graph, dynamic=False)
        with torch.inference_mode():
            out = compiled(x)
            diff = float((out - model.graph(x)).abs().max())
        print(f"\ntorch.compile of the trunk: first call {time.perf_counter() - t0:.0f} s wall; "
              f"largest difference {diff:.1e}")
        a, b = [], []
        for _ in range(args.repeats):
            a += cpu_ms(lambda: model.graph(x), 5)
            b += cpu_ms(lambda: compiled(x), 5)
        print(f"  trunk, batch 1: eager {np.median(a):.1f} / compiled {np.median(b):.1f} CPU ms "
              f"({np.median(a) / np.median(b):.2f}x)")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
