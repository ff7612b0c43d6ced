"""The expected failures (each carries a message for the user: no traceback) and the cancel
token. Light on purpose (no torch, no Qt): the viewer classifies errors by these classes."""

from __future__ import annotations

import threading
from typing import Any


class PoseviewerError(Exception):
    """An expected failure: its message says what went wrong, for the user."""


class ImageError(PoseviewerError):
    """The image is missing, unreadable or of an unsupported kind."""


class ModelError(PoseviewerError):
    """A model (2D network weights, 3D pose model) is missing or unreadable."""


class ImportFormatError(PoseviewerError, ValueError):
    """A file to import is not in a format we understand, or its content is inconsistent."""


class Cancelled(Exception):
    """Raised between stages when the caller's cancel token was set."""


class CancelToken(threading.Event):
    """A ``threading.Event`` the GUI sets from another thread; the network checks it
    between stages."""

    def cancel(self) -> None:
        """Ask the running estimate to stop at the next stage boundary."""
        self.set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self.is_set()


def check_cancel(cancel: Any) -> None:
    """Raise :class:`Cancelled` if ``cancel`` (a token or ``threading.Event``, a callable or
    None) says so."""
    if cancel is None:
        return
    if isinstance(cancel, threading.Event):
        flag = cancel.is_set()
    else:
        flag = cancel() if callable(cancel) else getattr(cancel, "cancelled", False)
    if flag:
        raise Cancelled("cancelled by the user")
