"""The I/O pool: sized for I/O, stuck workers written off and replaced."""

from __future__ import annotations

import threading

import pytest

from armor_notify.pool import IOPool


def test_abandoned_stuck_worker_is_replaced() -> None:
    pool = IOPool(max_workers=1)
    release = threading.Event()
    stuck = pool.submit(lambda: release.wait(10))
    pool.abandon(stuck)
    assert pool.submit(lambda: 42).result(timeout=5) == 42
    release.set()
    assert stuck.result(timeout=5) is True
    pool.close()


def test_exceptions_reach_the_future() -> None:
    pool = IOPool(max_workers=2)

    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        pool.submit(boom).result(timeout=5)
    pool.close()


def test_workers_are_reused_and_capped() -> None:
    pool = IOPool(max_workers=3)
    results = [pool.submit(lambda i=i: i * 2).result(timeout=5) for i in range(10)]
    assert results == [i * 2 for i in range(10)]
    assert pool._workers <= 3
    pool.close()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: 1)


def test_worker_threads_are_daemons() -> None:
    pool = IOPool(max_workers=1)
    name = pool.submit(lambda: threading.current_thread().daemon).result(timeout=5)
    assert name is True
    pool.close()


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        IOPool(max_workers=0)
