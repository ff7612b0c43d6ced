"""poseviewer: run, inspect and extend "Lifting from the Deep" on a laptop CPU."""

from __future__ import annotations

from poseviewer.version import __version__

__all__ = ["Estimator", "__version__"]


def __getattr__(name: str):  # lazy: importing the package must not import torch or Qt
    if name == "Estimator":
        from poseviewer.estimator import Estimator

        return Estimator
    raise AttributeError(name)
