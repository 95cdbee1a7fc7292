"""A fixed crew of worker threads that start each round together.

Hundreds of trials with fresh threads would spend their time opening database connections; a
crew keeps its threads (and so each thread's own Django connection) across rounds, and a new
barrier per round makes all of them hit the store at the same instant every time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import connections

T = TypeVar("T")

# A round that has not started (or finished) by then is a hang, not a slow database.
ROUND_TIMEOUT = 120.0


class Crew:
    """``size`` threads; :meth:`run` gives each the same work and returns their results in order."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="crew")

    def run(self, work: Callable[[int], T]) -> list[T]:
        # Every task waits at the barrier, so the pool must give each one its own thread: the
        # pool's threads are reused once they exist, and one more is started while none is idle.
        barrier = threading.Barrier(self.size, timeout=ROUND_TIMEOUT)

        def task(index: int) -> T:
            barrier.wait()
            return work(index)

        futures = [self._pool.submit(task, index) for index in range(self.size)]
        return [future.result(timeout=ROUND_TIMEOUT) for future in futures]

    def close(self) -> None:
        """Close every worker's database connections, then stop the workers."""
        try:
            self.run(lambda _: connections.close_all())
        finally:
            self._pool.shutdown(wait=True)
