"""Cooperative cancellation between CNN stages."""

from __future__ import annotations

from typing import Any


class Cancelled(Exception):
    """Raised between stages when the caller's cancel token was set."""


class CancelToken:
    """A flag the GUI sets from another thread; the network checks it between stages."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        """Ask the running estimate to stop at the next stage boundary."""
        self.cancelled = True


def check_cancel(cancel: Any) -> None:
    """Raise :class:`Cancelled` if ``cancel`` (a token, a callable or None) says so."""
    if cancel is None:
        return
    flag = cancel() if callable(cancel) else getattr(cancel, "cancelled", False)
    if flag:
        raise Cancelled("cancelled by the user")
