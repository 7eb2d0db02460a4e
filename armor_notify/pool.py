"""A pool of daemon I/O threads whose stuck workers can be written off.

Deliveries wait on the network, not the CPU, so the pool is sized for I/O (default 32), not by
core count. A sender that hangs past its timeout keeps its thread, but the pool stops counting
it and starts a replacement, and daemon threads never keep the process alive at exit
(``concurrent.futures.ThreadPoolExecutor`` joins its threads at exit, so a hung plugin would).

A finished job is put on the queue its submitter named, so the submitter waits for "whichever
finishes first" with one ``queue.get`` (``concurrent.futures.wait`` costs several times that,
which showed in single-alert sends).

A job records when a thread started running it (``started``, on the monotonic clock), so its
submitter times the work itself, never the wait for a thread; and a job no thread has started
yet can be cancelled, atomically: then it never runs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Job(Generic[T]):
    """One call on a pool thread: ``result`` once it returned, ``error`` if it raised."""

    __slots__ = ("cancelled", "done", "error", "finished", "fn", "result", "started")

    def __init__(self, fn: Callable[[], T], done: queue.SimpleQueue[Job[T]]) -> None:
        self.fn = fn
        self.done = done
        self.result: T | None = None
        self.error: BaseException | None = None
        self.started: float | None = None
        """When a thread started running it (``time.monotonic``); ``None``: not yet."""
        self.finished = False
        self.cancelled = False

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> T:
        """The result, or the exception raised again (for callers that want either)."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # T itself may include None


class IOPool:
    def __init__(self, max_workers: int = 32, name: str = "armor-notify") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.name = name
        self._tasks: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0  # workers waiting for a task
        self._pending = 0  # tasks no worker has taken yet
        self._abandoned: set[Job[Any]] = set()
        self._closed = False

    def submit(self, fn: Callable[[], T], done: queue.SimpleQueue[Job[T]]) -> Job[T]:
        """Run ``fn`` on a pool thread; the job is put on ``done`` when it returns or raises."""
        job = Job(fn, done)
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is closed")
            self._tasks.put(job)
            self._pending += 1
            if self._pending > self._idle and self._workers - len(self._abandoned) < self.max_workers:
                self._start_worker()
        return job

    @staticmethod
    def run_here(fn: Callable[[], T], done: queue.SimpleQueue[Job[T]]) -> Job[T]:
        """Run ``fn`` on the calling thread, reported on ``done`` as a pool job would be. A
        ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM where the command line turns it into one) is
        the caller's, not the job's: it propagates, as it would have while waiting for a pool
        thread."""
        job = Job(fn, done)
        job.started = time.monotonic()
        job.run()
        if isinstance(job.error, KeyboardInterrupt):
            raise job.error
        job.finished = True
        done.put(job)
        return job

    def cancel(self, job: Job[Any]) -> bool:
        """Make sure ``job`` never runs, if no thread has started it yet (then True); False when
        it has started (or finished): it then runs to its end as usual."""
        with self._lock:
            if job.started is not None or job.cancelled:
                return job.cancelled
            job.cancelled = True
            self._pending -= 1
            return True

    def abandon(self, job: Job[Any]) -> None:
        """Stop counting the worker running ``job`` (it hung); a new worker takes its place."""
        with self._lock:
            if job.started is not None and not job.finished:
                self._abandoned.add(job)
                if (self._pending > self._idle and not self._closed
                        and self._workers - len(self._abandoned) < self.max_workers):
                    self._start_worker()

    def _start_worker(self) -> None:
        self._workers += 1
        threading.Thread(target=self._work, name=f"{self.name}-{self._workers}",
                         daemon=True).start()

    def _work(self) -> None:
        with self._lock:
            self._idle += 1
        while True:
            job = self._tasks.get()
            with self._lock:
                self._idle -= 1
                if job is None:
                    self._workers -= 1
                    return
                if job.cancelled:
                    self._idle += 1
                    continue
                self._pending -= 1
                job.started = time.monotonic()
            job.run()
            with self._lock:
                job.finished = True
                self._abandoned.discard(job)
                self._idle += 1
            # Reported last, so this thread is already waiting (not holding the GIL) when the
            # submitter wakes: its next steps (SQLite calls release the GIL) then run without
            # handing the GIL back and forth.
            job.done.put(job)

    def close(self) -> None:
        """Let idle workers exit; a worker still stuck in a plugin exits when it returns."""
        with self._lock:
            self._closed = True
            for _ in range(self._workers):
                self._tasks.put(None)
