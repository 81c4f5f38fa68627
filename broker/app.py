"""The key broker's HTTP API: GET /health, POST /nonce, POST /key (attested, audited key release),
GET /metrics (counts only, junk key requests among them).

Nonces live in this process's memory: run the broker as one process (threads are fine).
"""
import time
from typing import Callable

from flask import Flask, request

from attestation.service import ApiError, install_error_handlers, install_metrics
from broker.audit import AuditLog
from broker.config import BrokerConfig
from broker.kms import MasterKey, load_master_key
from broker.key_release import Appraise, KeyRelease
from broker.metrics import BrokerMetrics
from attestation.canonical import JsonError, read_json_request
from attestation.hardening import process_hardening
from attestation.manifest import manifest_path, read_public_key
from attestation.nonces import NonceStore, NonceStoreFull


def create_app(config: BrokerConfig, *, appraise: Appraise, min_version_for: Callable[[str], int],
               master_key: MasterKey | None = None,
               clock: Callable[[], float] = time.monotonic) -> Flask:
    """The broker app. `appraise(evidence, role, report_data) -> verdict` raises AttestationError."""
    app = Flask("broker")
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    master = master_key if master_key is not None else load_master_key(
        path=config.master_key_file, hex_value=config.master_key_hex)
    metrics = BrokerMetrics()
    nonces = NonceStore(config.nonce_ttl_seconds, config.max_nonces, clock)
    release = KeyRelease(master=master, owner_public_key=read_public_key(config.release_public_key),
                         manifest_file=manifest_path(config.data_dir), nonces=nonces,
                         appraise=appraise, min_version_for=min_version_for, audit=AuditLog(config.audit_log),
                         count_junk=lambda check: metrics.junk.labels(check=check).inc())
    install_error_handlers(app)
    install_metrics(app, metrics, refresh=lambda: metrics.nonces.set(len(nonces)))

    @app.get("/health")
    def health():
        return {"status": "ok", "hardening": process_hardening()}

    @app.post("/nonce")
    def nonce():
        return {"nonce": _issue(nonces).hex(), "ttl_seconds": config.nonce_ttl_seconds}

    @app.post("/key")
    def key():
        return release.handle(_key_request_body(release, config.max_request_bytes), request.remote_addr)

    return app


def _issue(nonces: NonceStore) -> bytes:
    try:
        return nonces.issue()
    except NonceStoreFull:
        raise ApiError(503, "too many outstanding nonces; retry shortly") from None


def _key_request_body(release: KeyRelease, max_bytes: int):
    """POST /key's JSON value; a body that is not JSON at all is junk: counted, never audited."""
    try:
        return read_json_request(request, max_bytes)
    except JsonError:
        release.count_junk("json")
        raise
