"""A pool of daemon I/O threads whose stuck workers can be written off.

Deliveries wait on the network, not the CPU, so the pool is sized for I/O (default 32), not by
core count. A sender that hangs past its timeout keeps its thread, but the pool stops counting
it and starts a replacement, and daemon threads never keep the process alive at exit
(``concurrent.futures.ThreadPoolExecutor`` joins its threads at exit, so a hung plugin would).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Task = tuple[Future[Any], Callable[[], Any]]


class IOPool:
    def __init__(self, max_workers: int = 32, name: str = "armor-notify") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.name = name
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0  # workers waiting for a task
        self._pending = 0  # tasks no worker has taken yet
        self._abandoned: set[Future[Any]] = set()
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is closed")
            self._tasks.put((future, fn))
            self._pending += 1
            if self._pending > self._idle and self._workers - len(self._abandoned) < self.max_workers:
                self._start_worker()
        return future

    def abandon(self, future: Future[Any]) -> None:
        """Stop counting the worker running ``future`` (it hung); a new worker takes its place."""
        with self._lock:
            if not future.done():
                self._abandoned.add(future)

    def _start_worker(self) -> None:
        self._workers += 1
        threading.Thread(target=self._work, name=f"{self.name}-{self._workers}",
                         daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            task = self._tasks.get()
            with self._lock:
                self._idle -= 1
                if task is None:
                    self._workers -= 1
                    return
                self._pending -= 1
            future, fn = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)
            with self._lock:
                self._abandoned.discard(future)

    def close(self) -> None:
        """Let idle workers exit; a worker still stuck in a plugin exits when it returns."""
        with self._lock:
            self._closed = True
            for _ in range(self._workers):
                self._tasks.put(None)
