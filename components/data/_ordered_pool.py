"""Run jobs on a small thread pool and get their results back in submission order.

NumPy and Arrow release the GIL in their heavy loops, so on two cores a parse or encode job
overlaps with the main thread's reading or writing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def in_order(jobs: Iterator[Callable[[], T]], threads: int) -> Generator[T, None, None]:
    """Results of `jobs` in order, at most `threads + 1` jobs in flight (bounded memory).

    When the caller stops early (an error, or `close()`), queued jobs are cancelled, running
    ones finish, and `jobs` is closed (it may hold an open file) before this returns.
    """
    try:
        if threads <= 1:
            for job in jobs:
                yield job()
            return
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ctrflow-prep") as pool:
            pending: deque[Future[T]] = deque()
            try:
                for job in jobs:
                    pending.append(pool.submit(job))
                    if len(pending) > threads:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
    finally:
        close = getattr(jobs, "close", None)
        if close is not None:
            close()
