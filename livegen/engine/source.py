"""An in-process MIDI source: what the demo and the tests play into a session."""

from __future__ import annotations

import queue
import time
from typing import Sequence

from livegen.clock import Clock


class QueueSource:
    """A MessageSource fed by ``put``; timestamps with the given clock, like a port callback."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._queue: queue.SimpleQueue[tuple[float, list[int]]] = queue.SimpleQueue()
        self._clock = clock

    def put(self, message: Sequence[int], t: float | None = None) -> None:
        self._queue.put((self._clock() if t is None else t, list(message)))

    def get(self, timeout: float | None = None) -> tuple[float, list[int]] | None:
        try:
            if timeout == 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
