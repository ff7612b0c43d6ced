"""Command line: ``poseviewer [IMAGE or VIDEO]`` opens the viewer; ``poseviewer COMMAND ...``
runs a tool.

Each command is a module in ``poseviewer.commands`` with a docstring (its help text),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when used,
so ``poseviewer --help`` stays fast and headless commands never import Qt.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: command name -> module in poseviewer.commands
COMMANDS: dict[str, str] = {
    "estimate": "estimate",
    "lift": "lift",
    "convert-release": "convert_release",
    "convert-tfjs": "convert_tfjs",
    "convert-detector": "convert_detector",
    "train-3d": "train_3d",
    "eval-3d": "eval_3d",
    "train-2d": "train_2d",
    "eval-2d": "eval_2d",
}


def _summary(module_name: str) -> str:
    try:
        mod = importlib.import_module(f"poseviewer.commands.{module_name}")
    except ImportError:
        return "(not available)"
    return (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""


def _top_help() -> str:
    lines = [
        "usage: poseviewer [IMAGE|VIDEO]      open the viewer (on IMAGE or VIDEO, or the sample)",
        "       poseviewer COMMAND [ARGS...]  run a tool; 'poseviewer COMMAND --help' for details",
        "",
        "commands:",
    ]
    lines += [f"  {name:<16} {_summary(mod)}" for name, mod in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poseviewer`` script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(_top_help())
        return 0
    if args and args[0] in COMMANDS:
        name = args[0]
        mod = importlib.import_module(f"poseviewer.commands.{COMMANDS[name]}")
        parser = argparse.ArgumentParser(
            prog=f"poseviewer {name}",
            description=mod.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(parser)
        return int(mod.run(parser.parse_args(args[1:])) or 0)
    from poseviewer.app import main as app_main  # Qt only from here

    return int(app_main(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
