"""BindKeyPool on a real swtpm: warm acquisition, rotation, expiry, background fill."""

from __future__ import annotations

import logging
import threading

import pytest

from trusted_launch.tpm.bindkeys import BindKeyPool

pytestmark = pytest.mark.swtpm


class FakeClock:
    """Monotonic time under the test's control (lifetime rotation only)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_warm_pool_acquire_does_not_generate(booted_device, caplog):
    pool = BindKeyPool(booted_device, size=3, max_uses=1)
    assert pool.fill() == 3
    assert pool.generated == 3
    with caplog.at_level(logging.WARNING):
        keys = [pool.acquire() for _ in range(3)]
    assert pool.generated == 3
    assert len({key.name for key in keys}) == 3
    assert "empty" not in caplog.text
    assert len(pool) == 0


def test_empty_pool_generates_synchronously_with_a_warning(booted_device, caplog):
    pool = BindKeyPool(booted_device, size=2, max_uses=1)
    with caplog.at_level(logging.WARNING, logger="trusted_launch.tpm.bindkeys"):
        key = pool.acquire()
    assert pool.generated == 1
    assert key.algorithm == "ecc"
    assert "empty" in caplog.text


def test_key_rotates_after_max_uses(booted_device):
    pool = BindKeyPool(booted_device, size=2, max_uses=3)
    pool.fill()
    names = [pool.acquire().name for _ in range(6)]
    assert names[0] == names[1] == names[2]
    assert names[3] == names[4] == names[5]
    assert names[0] != names[3]
    assert pool.generated == 2
    assert len(pool) == 0


def test_key_retires_after_lifetime(booted_device):
    clock = FakeClock()
    pool = BindKeyPool(booted_device, size=1, max_uses=10, lifetime_s=60, clock=clock)
    pool.fill()
    first = pool.acquire()
    clock.now += 59
    assert pool.acquire() == first
    clock.now += 2
    assert len(pool) == 0
    assert pool.acquire().name != first.name
    assert pool.generated == 2


def test_fill_in_a_background_thread_while_acquiring(booted_device):
    pool = BindKeyPool(booted_device, size=2, max_uses=1)
    filler = threading.Thread(target=pool.fill)
    filler.start()
    key = pool.acquire()
    filler.join()
    assert key.algorithm == "ecc"
    assert 2 <= pool.generated <= 3
    assert len(pool) == pool.generated - 1  # every key made is pooled or handed out
    # At most the pre-loaded next key stays loaded (see bindkeys' module docstring).
    assert len(booted_device.resident_handles()) == 1
    assert booted_device.transient_handles() == booted_device.resident_handles()


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"max_uses": 0}, {"lifetime_s": 0},
                                    {"algorithm": "dsa"}])
def test_invalid_pool_settings_are_refused(booted_device, kwargs):
    with pytest.raises(ValueError):
        BindKeyPool(booted_device, **kwargs)


def test_fill_prestarts_one_policy_session(booted_device):
    pool = BindKeyPool(booted_device, size=1)
    pool.fill()
    pool.fill()
    assert len(booted_device.loaded_sessions()) == 1
