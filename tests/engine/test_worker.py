"""ResponseWorker bookkeeping that a long session depends on."""

import time

import numpy as np

from daemon_driver import wait
from livegen.engine.scheduler import Scheduler
from livegen.engine.worker import ResponseRequest, ResponseWorker
from livegen.io.sinks import MemorySink
from livegen.model.params import SamplingParams


class Line:
    def feed(self, rows) -> None:
        pass

    def fork(self) -> "Line":
        return self

    def sample(self, params, *, chord=()) -> np.ndarray:
        return np.array([60.0, 0.1, 0.05, 90.0])


def test_cancelled_answers_are_forgotten_once_their_jobs_end():
    scheduler = Scheduler(MemorySink())
    worker = ResponseWorker(Line(), scheduler)
    worker.start()
    try:
        for tag in range(1, 201):  # speculative answers cancelled before, while and after they run
            worker.respond(ResponseRequest(tag, time.monotonic() + 60, 3, 30.0, SamplingParams()))
            worker.cancel(tag)
            worker.cancel(tag - 1)
        assert wait(worker.idle, timeout=10)
        worker.cancel(7)  # long finished: nothing to remember
        assert worker._cancelled == set() and worker._pending == set()
        assert worker.is_cancelled(7) is False
    finally:
        worker.stop()
        scheduler.cancel()
