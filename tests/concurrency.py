"""Running the same operation from many real threads, each on its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import close_old_connections, connections

T = TypeVar("T")


def run_in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Start ``count`` threads at one barrier so they really overlap; return their results."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    close_old_connections()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]
