#!/usr/bin/env python
"""Write the few-KB TensorFlow checkpoint fixture used by tests/test_checkpoint.py.

Run with a throwaway TensorFlow venv OUTSIDE the repo (TensorFlow is not a dependency):

    python3 -m venv /work/scratch/tfvenv && /work/scratch/tfvenv/bin/pip install tensorflow-cpu
    /work/scratch/tfvenv/bin/python scripts/make_tf_fixture.py

It builds a TF-1 style graph whose variables are named like the release's
(``CPM/PoseNet/<layer>/weights`` HWIO, ``.../biases``) for the tiny ``tf_fixture`` network of
``poseviewer/cnn/config.py`` (loaded by file path: no torch needed), plus a few variables of
other dtypes outside ``CPM/``, saves them with ``tf.compat.v1.train.Saver`` (V2 format) and
writes the expected values to ``expected.npz``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "tf_ckpt"


def _load_config_module():
    spec = importlib.util.spec_from_file_location("_pv_cnn_config",
                                                  ROOT / "poseviewer" / "cnn" / "config.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


def expected_values() -> dict[str, np.ndarray]:
    """Name -> value (TF layout) of every variable in the fixture."""
    cfg = _load_config_module().tf_fixture()
    rng = np.random.default_rng(20170721)
    values: dict[str, np.ndarray] = {}
    for name, shape in cfg.tf_variables("CPM/PoseNet").items():
        values[name] = rng.standard_normal(shape).astype(np.float32)
    values["extra/double"] = np.array([[1.5, -2.25, 3.0]], dtype=np.float64)
    values["extra/int32"] = np.arange(6, dtype=np.int32).reshape(2, 3) - 2
    values["global_step"] = np.array(123456789012, dtype=np.int64)
    return values


def main() -> int:
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    values = expected_values()
    OUT.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        for name, value in values.items():
            tf.compat.v1.get_variable(name, initializer=tf.constant(value))
        saver = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V2)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(OUT / "model.ckpt"), write_meta_graph=False,
                       write_state=False)
    np.savez(OUT / "expected.npz", **{k.replace("/", "|"): v for k, v in values.items()})
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(ROOT)}  {p.stat().st_size} bytes")
    print("tensorflow", tf.__version__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
