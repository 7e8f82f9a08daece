"""Waiting for something a test or the demo cannot be told about: one helper for all."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, every: float = 0.05,
               error: Callable[[str], Exception] = TimeoutError) -> None:
    """Return once predicate() is true; raise error("timed out after N s waiting for
    WHAT") when timeout seconds pass first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
