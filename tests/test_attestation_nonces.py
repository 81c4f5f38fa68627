"""attestation/nonces.py: single-use, expiring, bounded challenge nonces that refuse when full."""
import pytest

from attestation.errors import AttestationError
from attestation.nonces import NonceError, NonceStore, NonceStoreFull
from tests.conftest import run_concurrently


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_nonce_is_single_use_and_a_replay_is_named(clock):
    store = NonceStore(60, 10, clock)
    nonce = store.issue()
    assert len(nonce) == 32 and nonce != store.issue()
    store.consume(nonce)
    with pytest.raises(NonceError, match="already used") as info:
        store.consume(nonce)
    assert info.value.reason == "replayed" and info.value.check == "nonce"
    assert isinstance(info.value, AttestationError)
    for stranger in (b"x" * 32, "not bytes", None):
        with pytest.raises(NonceError) as info:
            store.consume(stranger)
        assert info.value.reason == "unknown"


def test_nonce_expires(clock):
    store = NonceStore(10, 10, clock)
    nonce = store.issue()
    clock.now += 10.5
    with pytest.raises(NonceError, match="older than") as info:
        store.consume(nonce)
    assert info.value.reason == "expired"


def test_a_full_store_refuses_new_nonces_and_keeps_the_outstanding_ones(clock):
    # Issue 12: evicting the oldest would let a flood of challenges void a genuine party's nonce.
    store = NonceStore(60, 3, clock)
    first = store.issue()
    store.issue(), store.issue()
    for _ in range(5):
        with pytest.raises(NonceStoreFull):
            store.issue()
    assert len(store) == 3
    store.consume(first)  # still good after the flood
    clock.now += 61  # expired nonces, used or not, make room again
    store.issue()
    assert len(store) == 1


def test_used_nonces_count_until_they_expire(clock):
    store = NonceStore(60, 2, clock)
    store.consume(store.issue())
    store.issue()
    with pytest.raises(NonceStoreFull):
        store.issue()


def test_purge_keeps_the_fresh_ones(clock):
    store = NonceStore(10, 100, clock)
    old = [store.issue() for _ in range(3)]
    clock.now += 5
    young = store.issue()
    clock.now += 6  # the first three expired, the young one has 4 s left
    store.issue()
    assert len(store) == 2
    store.consume(young)
    with pytest.raises(NonceError):
        store.consume(old[0])


def test_nonce_consumed_once_under_concurrency():
    store = NonceStore(60, 10)
    nonce, wins = store.issue(), []

    def race():
        try:
            store.consume(nonce)
            wins.append(1)
        except NonceError:
            pass

    run_concurrently(race)
    assert len(wins) == 1
