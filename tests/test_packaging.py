"""Packaging: the built wheel carries resources/ (models, cards, sample photo) as package
data, and ``poseviewer.paths`` finds the resources in a checkout and when installed.
(``.ci/run`` goes further: it installs the wheel in a fresh venv and runs
``poseviewer estimate`` on the bundled photo.)"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from poseviewer import paths

ROOT = Path(__file__).resolve().parents[1]


def _load_paths_copy(package_dir: Path):
    """Import a copy of poseviewer/paths.py placed in ``package_dir`` (as if installed)."""
    package_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(paths.__file__), package_dir / "paths.py")
    spec = importlib.util.spec_from_file_location(f"paths_copy_{id(package_dir)}",
                                                  package_dir / "paths.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_resources_of_the_checkout():
    assert paths.RESOURCES == paths.resources_dir() == ROOT / "resources"
    assert paths.MODELS_DIR == ROOT / "resources" / "models"
    assert (paths.RESOURCES / "sample.jpg").is_file()


def test_resources_inside_an_installed_package(tmp_path):
    site = tmp_path / "site-packages"
    (site / "poseviewer" / "resources" / "models").mkdir(parents=True)
    mod = _load_paths_copy(site / "poseviewer")
    assert mod.RESOURCES == site / "poseviewer" / "resources"
    assert mod.MODELS_DIR == site / "poseviewer" / "resources" / "models"
    # a checkout (pyproject.toml beside the package) uses its top-level resources/
    repo = tmp_path / "repo"
    (repo / "resources").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    mod = _load_paths_copy(repo / "poseviewer")
    assert mod.RESOURCES == repo / "resources"


def _build_wheel(src: Path, out: Path) -> Path:
    """Build the project's wheel from a copy of its files (the checkout is left alone)."""
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        if (ROOT / name).is_file():
            shutil.copyfile(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "poseviewer", src / "poseviewer", ignore=ignore)
    shutil.copytree(ROOT / "resources", src / "resources", ignore=ignore)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.insert(4, "--no-build-isolation")  # offline and quicker when setuptools is here
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("poseviewer-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_ships_every_resource_as_package_data(tmp_path):
    src, out = tmp_path / "src", tmp_path / "dist"
    src.mkdir()
    wheel = _build_wheel(src, out)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        expected = {f"poseviewer/resources/{p.relative_to(ROOT / 'resources').as_posix()}"
                    for p in (ROOT / "resources").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts}
        assert expected and expected <= names, sorted(expected - names)
        assert "poseviewer/resources/sample.jpg" in names
        assert any(n.startswith("poseviewer/resources/models/") and n.endswith(".safetensors")
                   for n in names)
        # the same bytes, and nothing at the top level besides the package and its metadata
        for n in ("poseviewer/resources/sample.jpg",):
            assert z.read(n) == (ROOT / "resources" / "sample.jpg").read_bytes()
        tops = {n.split("/")[0] for n in names}
        assert tops == {"poseviewer", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                        + ".dist-info"}
        # every module of the package is in it (subpackages found automatically)
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "poseviewer").rglob("*.py")
                   if "__pycache__" not in p.parts}
        assert modules <= names, sorted(modules - names)


def _fake_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the bootstrap script beside pyproject.toml/setup.py, with a .venv whose
    pip only records its calls, whose python is this test's interpreter (torch present) and
    whose poseviewer only says it ran."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "bootstrap", repo / "scripts" / "bootstrap")
    for name in ("pyproject.toml", "setup.py"):
        shutil.copyfile(ROOT / name, repo / name)
    bin_ = repo / ".venv" / "bin"
    bin_.mkdir(parents=True)
    log = tmp_path / "pip_calls.log"
    scripts = {
        "pip": f'#!/bin/sh\necho "pip $*" >> "{log}"\n',
        "python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
        "poseviewer": '#!/bin/sh\necho "poseviewer ran $*"\n',
    }
    for name, text in scripts.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return repo, log


# the installs bootstrap makes (the installed torch's version pinned: the CPU build stays)
PIP_RUN = "pip install -q -e . -c .venv/.torch-pin"
PIP_TEST = "pip install -q -e .[dev,cluster] -c .venv/.torch-pin"


def _bootstrap(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BOOTSTRAP_SKIP_DEBS": "1"}
    return subprocess.run(["bash", str(repo / "scripts" / "bootstrap"), *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("bash") is None or importlib.util.find_spec("torch") is None,
                    reason="needs bash and torch in this interpreter")
def test_bootstrap_run_reinstalls_only_when_the_dependencies_change(tmp_path):
    repo, log = _fake_checkout(tmp_path)

    def pip_calls() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    first = _bootstrap(repo, "run", "photo.jpg")
    assert first.returncode == 0, first.stderr
    assert "poseviewer ran photo.jpg" in first.stdout
    assert pip_calls() == [PIP_RUN]
    for _ in range(2):  # later launches: straight to the app
        again = _bootstrap(repo, "run")
        assert again.returncode == 0 and "poseviewer ran" in again.stdout
    assert pip_calls() == [PIP_RUN]
    (repo / "pyproject.toml").touch()  # a new time stamp alone changes nothing
    _bootstrap(repo, "run")
    assert len(pip_calls()) == 1
    # a changed dependency list: installed again, once
    text = (repo / "pyproject.toml").read_text()
    (repo / "pyproject.toml").write_text(text.replace('"tqdm>=4.60",', '"tqdm>=4.61",'))
    _bootstrap(repo, "run")
    _bootstrap(repo, "run")
    assert pip_calls() == [PIP_RUN] * 2
    # the tests need the dev and cluster extras: installed once; 'run' is happy with that install
    assert _bootstrap(repo, "test", "--version").returncode == 0
    _bootstrap(repo, "run")
    assert pip_calls() == [PIP_RUN] * 2 + [PIP_TEST]
