"""The viewer worker's error kinds and its cancel token."""

from __future__ import annotations

import pytest


def test_worker_classifies_errors_by_class_not_by_name() -> None:
    from poseviewer.app.worker import ErrorKind, _message
    from poseviewer.cnn.weights import WeightsError
    from poseviewer.errors import ImageError, ImportFormatError
    from poseviewer.lifting import PoseModelError

    class NotTheImageError(ImageError):  # another name, the same class family
        pass

    ImposterError = type("ImageError", (RuntimeError,), {})  # the name only
    from poseviewer.video.source import VideoError

    assert ErrorKind.of(NotTheImageError("x")) is ErrorKind.IMAGE
    assert ErrorKind.of(ImposterError("x")) is ErrorKind.ERROR
    assert ErrorKind.of(WeightsError("w")) is ErrorKind.MODEL
    assert ErrorKind.of(PoseModelError("m")) is ErrorKind.MODEL
    assert ErrorKind.of(ImportFormatError("i")) is ErrorKind.IMPORT
    assert ErrorKind.of(VideoError("v")) is ErrorKind.VIDEO
    assert ErrorKind("image") is ErrorKind.IMAGE and f"{ErrorKind.NO_PERSON}" == "no person"
    with pytest.raises(ValueError):
        ErrorKind("imgae")  # a misspelt kind fails loudly
    assert _message(NotTheImageError("unreadable")) == "unreadable"
    assert _message(ImposterError("boom")).startswith("ImageError: boom")


def test_cancel_token_is_a_threading_event() -> None:
    import threading

    from poseviewer.errors import Cancelled, CancelToken, check_cancel

    token = CancelToken()
    assert isinstance(token, threading.Event) and not token.cancelled
    check_cancel(token)
    token.cancel()
    assert token.is_set() and token.cancelled
    with pytest.raises(Cancelled):
        check_cancel(token)
    plain = threading.Event()
    plain.set()
    with pytest.raises(Cancelled):
        check_cancel(plain)
