"""The I/O pool: sized for I/O, stuck workers written off and replaced, finished jobs reported
on the submitter's queue."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest
from pytest_mock import MockerFixture

from armor_notify.pool import IOPool, Job


def finished_job(done: queue.SimpleQueue[Job[Any]]) -> Job[Any]:
    return done.get(timeout=5)


def test_abandoned_stuck_worker_is_replaced() -> None:
    pool = IOPool(max_workers=1)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
    release, running = threading.Event(), threading.Event()
    stuck = pool.submit(lambda: running.set() or release.wait(10), done)
    assert running.wait(5)
    pool.abandon(stuck)
    quick = pool.submit(lambda: 42, done)
    assert finished_job(done) is quick and quick.outcome() == 42
    release.set()
    assert finished_job(done) is stuck and stuck.outcome() is True
    assert pool._abandoned == set()  # it came back: counted again
    pool.close()


def test_a_job_that_finished_is_not_written_off() -> None:
    pool = IOPool(max_workers=1)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
    pool.submit(lambda: 1, done)
    job = finished_job(done)
    pool.abandon(job)  # too late: it already returned
    assert pool._abandoned == set()
    pool.close()


def test_exceptions_are_kept_on_the_job() -> None:
    pool = IOPool(max_workers=2)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()

    def boom() -> None:
        raise KeyError("x")

    job = pool.submit(boom, done)
    assert finished_job(done) is job
    assert isinstance(job.error, KeyError) and job.result is None
    with pytest.raises(KeyError):
        job.outcome()
    pool.close()


def test_whichever_finishes_first_is_reported_first() -> None:
    pool = IOPool(max_workers=4)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
    release = threading.Event()
    slow = pool.submit(lambda: release.wait(10), done)
    fast = pool.submit(lambda: "fast", done)
    assert finished_job(done) is fast
    release.set()
    assert finished_job(done) is slow
    pool.close()


def test_workers_are_reused_and_capped() -> None:
    pool = IOPool(max_workers=3)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
    results = []
    for i in range(10):
        pool.submit(lambda i=i: i * 2, done)
        results.append(finished_job(done).outcome())
    assert results == [i * 2 for i in range(10)]
    assert pool._workers <= 3
    pool.close()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: 1, done)


def test_worker_threads_are_daemons() -> None:
    pool = IOPool(max_workers=1)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
    pool.submit(lambda: threading.current_thread().daemon, done)
    assert finished_job(done).outcome() is True
    pool.close()


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        IOPool(max_workers=0)


def test_a_job_waiting_for_a_thread_has_not_started_and_can_be_cancelled() -> None:
    pool = IOPool(max_workers=1)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
    release, running = threading.Event(), threading.Event()
    ran: list[str] = []
    busy = pool.submit(lambda: running.set() or release.wait(10), done)
    assert running.wait(5)
    waiting = pool.submit(lambda: ran.append("waiting"), done)
    assert busy.started is not None and waiting.started is None  # its clock has not started
    assert pool.cancel(waiting) is True
    assert pool.cancel(busy) is False  # already running: it runs to its end
    after = pool.submit(lambda: "after", done)
    release.set()
    assert finished_job(done) is busy
    assert finished_job(done) is after  # the cancelled job was skipped, never reported
    assert ran == [] and not waiting.finished
    pool.close()


def test_a_job_starts_its_clock_when_a_thread_takes_it(mocker: MockerFixture) -> None:
    clock = mocker.patch("armor_notify.pool.time", autospec=True)  # the pool's clock, no other
    clock.monotonic.return_value = 100.0
    pool = IOPool(max_workers=1)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
    release, running = threading.Event(), threading.Event()
    first = pool.submit(lambda: running.set() or release.wait(10), done)
    assert running.wait(5)
    second = pool.submit(lambda: 2, done)  # submitted at 100, while the only thread is busy
    clock.monotonic.return_value = 160.0
    release.set()  # the thread takes the second job at 160
    assert finished_job(done) is first and finished_job(done) is second
    assert (first.started, second.started) == (100.0, 160.0)
    pool.close()


def test_work_waiting_behind_an_abandoned_job_gets_a_new_thread_at_once() -> None:
    pool = IOPool(max_workers=1)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
    release, running = threading.Event(), threading.Event()
    stuck = pool.submit(lambda: running.set() or release.wait(10), done)
    assert running.wait(5)
    waiting = pool.submit(lambda: "waited", done)  # queued: the only thread is stuck
    pool.abandon(stuck)  # no further submit needed for the queued job to start
    assert finished_job(done) is waiting
    release.set()
    assert finished_job(done) is stuck
    pool.close()


def test_a_cancelled_job_frees_its_place_for_the_next() -> None:
    pool = IOPool(max_workers=1)
    done: queue.SimpleQueue[Job[Any]] = queue.SimpleQueue()
    release, running = threading.Event(), threading.Event()
    pool.submit(lambda: running.set() or release.wait(10), done)
    assert running.wait(5)
    for _ in range(3):
        assert pool.cancel(pool.submit(lambda: "never", done))
    assert pool._pending == 0
    release.set()
    finished_job(done)
    after = pool.submit(lambda: "next", done)
    assert finished_job(done) is after and after.outcome() == "next"
    pool.close()
