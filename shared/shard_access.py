"""How a node gets its plaintext shard: an attested key release from the broker, then decryption in memory.

A broker that cannot be reached, times out or fails (5xx) is waited for, with backoff, for as long as
it takes: the node heals by itself once the broker answers (issue 13). A refusal (4xx: this
measurement or version is not released) is final and fails the load with the broker's reason.
"""
import itertools
import time
from pathlib import Path

import requests

from attestation.key_request import KeyReleaseError, fetch_shard_key
from shared.loading import Release
from shared.shard_crypto import decrypt_to_memory


BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # then every 8 s


def broker_opener(broker_url: str, role: str, release: Release, evidence, on_wait=None, sleep=time.sleep):
    """-> open_shard(entry, path) for shared.loading.load_part.

    `evidence(report_data) -> dict` is the node's attester: the broker releases the key only to
    evidence of this role's blessed measurement, wrapped to a key that lives in this process only.
    """

    def fetch() -> tuple[str, bytes]:
        for attempt in itertools.count():
            try:
                with requests.Session() as http:
                    return fetch_shard_key(broker_url, role=role, model_id=release.model_id,
                                           version=release.manifest["version"], attester=evidence, session=http)
            except KeyReleaseError as exc:
                if exc.status is not None and exc.status < 500:
                    raise
                if on_wait:
                    on_wait(f"waiting for key broker ({exc})")
                sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])

    def open_shard(entry: dict, path: Path) -> bytes:
        key_id, key = fetch()
        return decrypt_to_memory(path, key, key_id=key_id, plaintext_sha256=entry["plaintext_sha256"])

    return open_shard
