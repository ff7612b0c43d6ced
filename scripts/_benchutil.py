"""Small helpers the benchmark scripts share (not part of the package)."""

from __future__ import annotations

import subprocess


def uptime() -> str:
    """What ``uptime`` prints (load averages), to note beside every timing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "(uptime not available)"
