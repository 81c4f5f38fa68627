"""How a node gets its plaintext shard: an attested key release from the broker, then decryption in memory."""
from pathlib import Path

import requests

from attestation.key_request import fetch_shard_key
from shared.loading import Release
from shared.shard_crypto import decrypt_to_memory


def broker_opener(broker_url: str, role: str, release: Release, evidence):
    """-> open_shard(entry, path) for shared.loading.load_part.

    `evidence(report_data) -> dict` is the node's attester: the broker releases the key only to
    evidence of this role's blessed measurement, wrapped to a key that lives in this process only.
    """

    def open_shard(entry: dict, path: Path) -> bytes:
        with requests.Session() as http:
            key_id, key = fetch_shard_key(broker_url, role=role, model_id=release.model_id,
                                          version=release.manifest["version"], attester=evidence, session=http)
        return decrypt_to_memory(path, key, key_id=key_id, plaintext_sha256=entry["plaintext_sha256"])

    return open_shard
