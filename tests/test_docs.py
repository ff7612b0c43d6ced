"""The documentation (README.md and docs/*.md) against the code it quotes.

The README is the newcomer's page; the deep sections live in docs/. Wherever the text now
lives, these tests read it: every ``poseviewer COMMAND --option`` quoted must be an option
of that command's parser, every quoted field or name must exist in the field table or the
code, every relative link and picture must resolve, and the README's two fresh-machine
commands must be the ones the bootstrap script and CI run.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from poseviewer.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
#: the pages the README's deep sections moved to (each linked from the README)
MOVED = ("lifting", "exporting", "video", "batch", "viewer", "estimator", "architecture",
         "network", "training")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _options(command: str) -> set[str]:
    mod = importlib.import_module(f"poseviewer.commands.{COMMANDS[command]}")
    parser = argparse.ArgumentParser(prog=f"poseviewer {command}")
    mod.add_arguments(parser)
    return {s for a in parser._actions for s in a.option_strings}


def _fences(text: str) -> tuple[list[tuple[str, str]], str]:
    """The fenced code blocks as (language, body), and the text outside them."""
    blocks: list[tuple[str, str]] = []
    prose: list[str] = []
    lang, body = None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body)))
                lang = None
        elif lang is None:
            prose.append(line)
        else:
            body.append(line)
    assert lang is None, "an unclosed code block"
    return blocks, "\n".join(prose)


def _quoted_commands(text: str) -> list[tuple[str, str]]:
    """(command, the text quoted with it) for every ``poseviewer COMMAND ...`` in code:
    fenced shell blocks (continuation lines and the option comments under a command
    included) and inline code spans."""
    found: list[tuple[str, str]] = []
    blocks, prose = _fences(text)
    for lang, block in blocks:
        if lang not in ("bash", "sh", "console", ""):
            continue
        current: tuple[str, list[str]] | None = None
        for line in block.splitlines():
            m = re.match(r"\s*(?:nice -n \d+ )?poseviewer ([a-z0-9-]+)\b(.*)", line)
            if m and m.group(1) in COMMANDS:
                if current:
                    found.append((current[0], " ".join(current[1])))
                current = (m.group(1), [m.group(2)])
            elif current and (line.lstrip().startswith("#") or line.startswith("    ")):
                current[1].append(line)
            elif current:
                found.append((current[0], " ".join(current[1])))
                current = None
        if current:
            found.append((current[0], " ".join(current[1])))
    for span in re.findall(r"`([^`\n]+)`", prose):
        m = re.match(r"poseviewer ([a-z0-9-]+)\b(.*)", span)
        if m and m.group(1) in COMMANDS:
            found.append((m.group(1), m.group(2)))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_quoted_option_exists(page: Path) -> None:
    bad = []
    for command, quoted in _quoted_commands(_text(page)):
        # the comment after a '#' on a command's own line names outputs, not options;
        # option comments sit on their own lines ('#   --device cpu|cuda ...')
        opts = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", quoted))
        unknown = opts - _options(command)
        if unknown:
            bad.append(f"poseviewer {command}: {sorted(unknown)}")
    assert not bad, f"{page.name} quotes options the commands do not have: {bad}"


def test_the_pages_quote_the_commands_they_describe() -> None:
    """The moved sections still quote their commands (a test reading an empty page passes
    nothing)."""
    quoted = {p.stem: {c for c, _ in _quoted_commands(_text(p))} for p in DOCS}
    assert {"estimate", "lift"} <= quoted["exporting"]
    assert "estimate" in quoted["video"] and "estimate" in quoted["batch"]
    assert {"train-3d", "eval-3d"} <= quoted["lifting"]
    assert {"convert-tfjs", "convert-detector", "train-2d"} <= quoted["training"]
    assert "convert-release" in quoted["estimator"]


def _names_in_code() -> str:
    """The project's code and the names of its files (scripts, tests, resources)."""
    files = [p for d in ("poseviewer", "scripts", "tests") for p in (ROOT / d).rglob("*.py")]
    names = [p.name for p in (ROOT / "resources").rglob("*")] + [p.name for p in files]
    return "\n".join([_text(p) for p in files] + names)


@pytest.mark.parametrize("name", ["exporting", "video", "batch", "lifting", "estimator",
                                  "viewer"])
def test_quoted_fields_and_names_exist(name: str) -> None:
    """Every snake_case name quoted in backticks (a JSON key, NPZ key, column, argument,
    function) is a field of the field table or appears in the code."""
    from poseviewer import result

    specs = [s for group in ("PERSON_FIELDS", "STAGE_FIELDS", "FIT_FIELDS",
                             "COMPONENT_FIELDS") for s in getattr(result, group)]
    keys = {k for s in specs for k in (s.name, s.json_key, s.npz_key) if k}
    code = _names_in_code()
    text = _text(ROOT / "docs" / f"{name}.md")
    quoted = set()
    for span in re.findall(r"`([^`\n]+)`", _fences(text)[1]):
        if " = " in span:  # a formula, not a name
            continue
        quoted |= set(re.findall(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b", span))
    assert quoted, f"docs/{name}.md quotes no names"
    missing = sorted(q for q in quoted if q not in keys and q not in code)
    assert not missing, f"docs/{name}.md quotes names found nowhere in the code: {missing}"


def test_field_keys_quoted_in_the_export_pages_are_the_tables() -> None:
    """The keys the export pages name as the video/sequence additions are fields written by
    the sequence exporters."""
    text = _text(ROOT / "docs" / "video.md")
    for key in ("frame_index", "frame_time", "track_id", "raw_joints_2d", "tracks"):
        assert f"`{key}`" in text
    src = _text(ROOT / "poseviewer" / "export" / "video.py") + _text(
        ROOT / "poseviewer" / "result.py")
    for key in ("frame_index", "frame_time", "track_id", "raw_joints_2d", "tracks"):
        assert f'"{key}"' in src, key


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_pictures_resolve(page: Path) -> None:
    text = _fences(_text(page))[1]
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)
    bad = []
    for t in targets:
        if re.match(r"[a-z]+://", t) or t.startswith("#"):
            continue
        path = t.split("#", 1)[0]
        if not (page.parent / path).exists():
            bad.append(t)
    assert not bad, f"{page.name}: links that do not resolve: {bad}"


def test_readme_links_every_moved_page_and_shows_the_viewer() -> None:
    readme = _text(ROOT / "README.md")
    for name in MOVED:
        assert f"](docs/{name}.md)" in readme, name
    shot = ROOT / "docs" / "images" / "viewer.png"
    assert "](docs/images/viewer.png)" in readme.split("## ")[0], "the picture comes first"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size < 400_000
    assert (ROOT / "scripts" / "screenshot_readme.py").is_file()
    assert len(readme.splitlines()) < 150


def test_the_two_commands_are_what_bootstrap_and_ci_run() -> None:
    readme = _text(ROOT / "README.md")
    section = readme.split("## Two commands on a fresh machine")[1].split("\n## ")[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert [b.strip() for b in blocks] == ["scripts/bootstrap run", "scripts/bootstrap test"]
    boot = _text(ROOT / "scripts" / "bootstrap")
    for mode in ("run", "test", "wheel"):
        assert re.search(rf"^\s*{mode}\)", boot, flags=re.M), mode
    ci = ROOT / ".ci" / "run"
    if ci.is_file():
        assert re.search(r"^scripts/bootstrap test$", _text(ci), flags=re.M)


def test_readme_states_the_rules_the_code_follows() -> None:
    """Exit codes, report paths and the memory bound: in the README, and the same numbers
    as the code (the exit codes also in the batch commands' --help)."""
    from poseviewer.commands._batch import EXIT_RULE
    from poseviewer.imageio import HARD_MAX_PIXELS, MAX_PIXELS

    rules = _text(ROOT / "README.md").split("## Rules")[1].split("\n## ")[0]
    flat = " ".join(rules.split())
    for code in ("0 every input succeeded", "1 some input failed", "2 a usage error",
                 "130 interrupted"):
        assert code in flat, code
    assert "a path that does not exist, even among good ones" in flat
    assert "does not exist (even among good ones)" in " ".join(EXIT_RULE.split())
    assert "`report.json`** are absolute" in flat and "absolute" in EXIT_RULE
    assert f"above {MAX_PIXELS // 10**6} megapixels" in flat
    assert HARD_MAX_PIXELS == 2**30 and "2^30" in flat
    assert "NaN or infinite coordinate is never visible" in flat
