"""Command line: ``poseviewer [IMAGE]`` opens the viewer; ``poseviewer COMMAND ...`` runs a tool.

Each command is a module in ``poseviewer.commands`` with a docstring (its help text),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when used,
so ``poseviewer --help`` stays fast and headless commands never import Qt.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import shutil
import sys
import textwrap
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
    """The command's one-line summary: the first sentence of its docstring, whole (it may
    run over several lines there)."""
    try:
        mod = importlib.import_module(f"poseviewer.commands.{module_name}")
    except ImportError:
        return "(not available)"
    para = " ".join((mod.__doc__ or "").strip().split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s", para, maxsplit=1)[0]


def _top_help() -> str:
    lines = [
        "usage: poseviewer [IMAGE]            open the viewer (on IMAGE, or the bundled sample)",
        "       poseviewer COMMAND [ARGS...]  run a tool; 'poseviewer COMMAND --help' for details",
        "",
        "commands:",
    ]
    width = max(shutil.get_terminal_size((100, 24)).columns, 60)
    for name, mod in COMMANDS.items():
        lines += textwrap.wrap(_summary(mod), width=width, initial_indent=f"  {name:<17}",
                               subsequent_indent=" " * 19)
    return "\n".join(lines)


#: Environment that keeps OpenCV's and its FFmpeg's own log lines (``[ WARN:0@0.26] global
#: cap.cpp ...``, ``moov atom not found``) off stderr: our messages say what failed.
#: Values already set by the user are kept.
QUIET_NATIVE_LOGS = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_LOGLEVEL": "-8",
                     "OPENCV_VIDEOIO_DEBUG": "0"}


def quiet_native_logs() -> None:
    """Silence OpenCV's and FFmpeg's log output for this process (before cv2 loads; when
    it already has, through its API too)."""
    for key, value in QUIET_NATIVE_LOGS.items():
        os.environ.setdefault(key, value)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and os.environ["OPENCV_LOG_LEVEL"] == "ERROR":
        with contextlib.suppress(Exception):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poseviewer`` script."""
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_native_logs()
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
