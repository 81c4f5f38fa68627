"""The signed records of node1's recent completions, in memory: an LRU of the last N, hashes only.

A record holds no content (the request and response are known by their SHA-256 alone), so keeping
thousands costs about 600 bytes each and leaks nothing a caller could not hash themselves.
"""
import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class SignatureRecord:
    id: str  # the completion's id, as its response carries it
    text: str  # "<request sha256 hex>:<response sha256 hex>", the exact bytes signed (UTF-8)
    signature: str  # hex of the Ed25519 signature over `text`


class SignatureStore:
    """The last `capacity` records by id; reading a record counts as using it. Safe across threads."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("a signature store holds at least one record")
        self.capacity = capacity
        self._records: OrderedDict[str, SignatureRecord] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, record: SignatureRecord) -> None:
        with self._lock:
            self._records[record.id] = record
            self._records.move_to_end(record.id)
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)

    def get(self, rid: str) -> SignatureRecord | None:
        with self._lock:
            record = self._records.get(rid)
            if record is not None:
                self._records.move_to_end(rid)
            return record

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)
