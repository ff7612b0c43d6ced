"""Torch's intra-op thread count for one block of work, under the one lock that every
user of it shares (today the person detector; the lifting is numpy and uses none):
``torch.set_num_threads`` is process-wide, so two blocks that change it must never
overlap."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: Serialises the blocks that change torch's thread count (see :func:`torch_threads`).
_THREADS_LOCK = threading.RLock()


@contextmanager
def torch_threads(n: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (None: leave torch's setting).

    ``torch.set_num_threads`` is not scoped to the calling thread: it also changes the
    count that other and new threads get (OpenMP/MKL globals). So the whole block runs
    under a module-level lock: blocks that change the count never overlap, each restores
    exactly the value it found, and the change lasts only as long as the block. Other
    torch work running at that moment in another thread may see the changed count;
    callers that mind pass None. Every user (today the person detector,
    ``PersonDetector.threads``) shares this one lock.
    """
    if n is None or device.type != "cpu":
        yield
        return
    with _THREADS_LOCK:
        old = torch.get_num_threads()
        if n == old:
            yield
            return
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)
