"""node1/signature_store.py: the last N signed records by id, the least recently used dropped first."""
import pytest

from node1.signature_store import SignatureRecord, SignatureStore
from tests.conftest import run_concurrently


def record(i: int) -> SignatureRecord:
    return SignatureRecord(f"chatcmpl-{i}", f"{i:064x}:{i:064x}", "ab" * 64)


def test_keeps_the_last_n_and_drops_the_oldest():
    store = SignatureStore(3)
    for i in range(5):
        store.put(record(i))
    assert len(store) == 3
    assert store.get("chatcmpl-0") is None and store.get("chatcmpl-1") is None
    assert [store.get(f"chatcmpl-{i}") for i in (2, 3, 4)] == [record(2), record(3), record(4)]


def test_reading_a_record_keeps_it():
    store = SignatureStore(2)
    store.put(record(0))
    store.put(record(1))
    assert store.get("chatcmpl-0") == record(0)  # now the most recently used
    store.put(record(2))
    assert store.get("chatcmpl-1") is None and store.get("chatcmpl-0") == record(0)


def test_unknown_id_and_capacity():
    assert SignatureStore(1).get("chatcmpl-nope") is None
    with pytest.raises(ValueError):
        SignatureStore(0)


def test_concurrent_puts_stay_bounded():
    store, counter = SignatureStore(50), iter(range(10**6))

    def work():
        for _ in range(200):
            store.put(record(next(counter)))

    run_concurrently(work, n=8)
    assert len(store) == 50
