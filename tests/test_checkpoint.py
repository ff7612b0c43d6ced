"""TF V2 checkpoint reader and release converter, on a fixture written by real TensorFlow
(scripts/make_tf_fixture.py) and on corrupted copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

from poseviewer.checkpoint import CheckpointError, CheckpointReader
from poseviewer.checkpoint.convert import RELEASE_NETWORKS, convert_checkpoint
from poseviewer.checkpoint.crc32c import crc32c, mask, unmask
from poseviewer.cli import main as cli_main
from poseviewer.cnn import LiftingCPM, load_cpm
from poseviewer.cnn.config import release_personnet, release_posenet, tf_fixture

FIXTURE = Path(__file__).parent / "fixtures" / "tf_ckpt"
PREFIX = FIXTURE / "model.ckpt"
DATA = "model.ckpt.data-00000-of-00001"


def _expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "expected.npz", allow_pickle=False) as z:
        return {k.replace("|", "/"): z[k] for k in z.files}


def _copy(tmp_path: Path) -> Path:
    for name in ("model.ckpt.index", DATA):
        shutil.copy(FIXTURE / name, tmp_path / name)
    return tmp_path / "model.ckpt"


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    data = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    assert crc32c(data) == crc32c(data[100_000:], crc32c(data[:100_000]))  # chunked path
    assert unmask(mask(0x12345678)) == 0x12345678


def test_reader_returns_every_tensor_exactly():
    expected = _expected()
    reader = CheckpointReader(PREFIX)
    assert reader.num_shards == 1
    assert set(reader.names()) == set(expected)
    for name, value in expected.items():
        got = reader.read(name)
        assert got.dtype == value.dtype and got.shape == value.shape, name
        assert np.array_equal(got, value), name
    assert reader.read("global_step") == 123456789012
    # the .index path works as a prefix too
    assert CheckpointReader(str(PREFIX) + ".index").names() == reader.names()


def test_converter_permutes_hwio_to_oihw_and_loads(tmp_path):
    expected = _expected()
    nets = {"tf_fixture": ("CPM/PoseNet", tf_fixture())}
    written = convert_checkpoint(PREFIX, tmp_path / "out", networks=nets)
    model = load_cpm(written["tf_fixture"])
    assert model.config == tf_fixture()
    state = model.state_dict()
    for name, _, cin, cout, _ in tf_fixture().conv_layers():
        hwio = expected[f"CPM/PoseNet/{name}/weights"]
        oihw = state[f"layers.{name}.weight"].numpy()
        assert oihw.shape[:2] == (cout, cin)
        k = hwio.shape[0]
        for o, i, h, w in [(0, 0, 0, 0), (cout - 1, cin - 1, k - 1, 0), (1, cin // 2, 0, k - 1)]:
            assert oihw[o, i, h, w] == hwio[h, w, i, o]
        assert np.array_equal(state[f"layers.{name}.bias"].numpy(),
                              expected[f"CPM/PoseNet/{name}/biases"])
    # the converted network runs
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 32))
    assert out.final.cnn.shape == (1, 15, 16, 16)


def test_release_layout_is_refused_on_a_small_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not match the release architecture"):
        convert_checkpoint(PREFIX, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_bad_checkpoint(tmp_path, capsys):
    assert cli_main(["convert-release", str(tmp_path / "nothing"), str(tmp_path / "o")]) == 1
    assert "checkpoint index not found" in capsys.readouterr().err


def test_missing_index(tmp_path):
    shutil.copy(FIXTURE / DATA, tmp_path / DATA)
    with pytest.raises(CheckpointError, match="checkpoint index not found"):
        CheckpointReader(tmp_path / "model.ckpt")


def test_missing_data_file(tmp_path):
    shutil.copy(FIXTURE / "model.ckpt.index", tmp_path / "model.ckpt.index")
    reader = CheckpointReader(tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError, match="data file not found"):
        reader.read("global_step")


def test_truncated_data_file(tmp_path):
    prefix = _copy(tmp_path)
    data = (tmp_path / DATA).read_bytes()
    (tmp_path / DATA).write_bytes(data[: len(data) // 2])
    reader = CheckpointReader(prefix)
    with pytest.raises(CheckpointError, match="truncated"):
        reader.read_all()


def test_flipped_byte_in_data_is_a_checksum_error(tmp_path):
    prefix = _copy(tmp_path)
    reader = CheckpointReader(prefix)
    entry = reader.entries["CPM/PoseNet/conv1_1/weights"]
    data = bytearray((tmp_path / DATA).read_bytes())
    data[entry.offset + 5] ^= 0x10
    (tmp_path / DATA).write_bytes(bytes(data))
    reader = CheckpointReader(prefix)
    with pytest.raises(CheckpointError, match="checksum mismatch for tensor 'CPM/PoseNet/conv1_1"):
        reader.read("CPM/PoseNet/conv1_1/weights")
    reader.read("CPM/PoseNet/conv2_1/weights")  # others are intact
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        convert_checkpoint(prefix, tmp_path / "out",
                           networks={"x": ("CPM/PoseNet", tf_fixture())})


def test_corrupt_or_truncated_index(tmp_path):
    prefix = _copy(tmp_path)
    index = (tmp_path / "model.ckpt.index").read_bytes()
    bad = bytearray(index)
    bad[10] ^= 0x01  # inside the first data block
    (tmp_path / "model.ckpt.index").write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        CheckpointReader(prefix)
    (tmp_path / "model.ckpt.index").write_bytes(index[:-7])
    with pytest.raises(CheckpointError, match="bad table magic"):
        CheckpointReader(prefix)
    (tmp_path / "model.ckpt.index").write_bytes(index[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        CheckpointReader(prefix)


def test_architecture_table_matches_the_release_variable_list():
    path = require_shared("docs", "release-checkpoint-variables.txt")
    listed = {}
    for line in path.read_text().splitlines():
        name, shape = line.split("\t")
        listed[name] = tuple(int(v) for v in shape.strip("[]").split(","))
    ours = {}
    for scope, cfg in RELEASE_NETWORKS.values():
        ours.update(cfg.tf_variables(scope))
    assert len(listed) == 178
    assert ours == listed


@pytest.mark.parametrize("make", [release_posenet, release_personnet, tf_fixture])
def test_architecture_table_matches_the_torch_modules(make):
    cfg = make()
    state = LiftingCPM(cfg).state_dict()
    table = cfg.tf_variables("S")
    assert len(table) == len(state)
    for name, shape in table.items():
        layer, kind = name.split("/")[1:]
        t = state[f"layers.{layer}.{'weight' if kind == 'weights' else 'bias'}"]
        want = (shape[3], shape[2], shape[0], shape[1]) if kind == "weights" else shape
        assert tuple(t.shape) == want
