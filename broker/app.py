"""The key broker's HTTP API: GET /health, POST /nonce, POST /key (attested, audited key release).

Nonces live in this process's memory: run the broker as one process (threads are fine).
"""
import time
from typing import Callable

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from broker.audit import AuditError, AuditLog
from broker.config import BrokerConfig
from broker.kms import MasterKey, load_master_key
from broker.key_release import Appraise, KeyRelease, Refusal
from attestation.canonical import JsonError, read_json_request
from attestation.hardening import process_hardening
from attestation.manifest import manifest_path, read_public_key
from attestation.nonces import NonceStore, NonceStoreFull


def _error(status: int, message: str):
    return jsonify(error=message), status


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return _error(e.code or 500, e.description or e.name)

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        # The type only: messages may carry request data, and clients never see a trace.
        app.logger.error("unhandled %s on %s", type(e).__name__, request.path)
        return _error(500, "internal error")


def create_app(config: BrokerConfig, *, appraise: Appraise, min_version_for: Callable[[str], int],
               master_key: MasterKey | None = None,
               clock: Callable[[], float] = time.monotonic) -> Flask:
    """The broker app. `appraise(evidence, role, report_data) -> verdict` raises AttestationError."""
    app = Flask("broker")
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    master = master_key if master_key is not None else load_master_key(
        path=config.master_key_file, hex_value=config.master_key_hex)
    nonces = NonceStore(config.nonce_ttl_seconds, config.max_nonces, clock)
    release = KeyRelease(master=master, owner_public_key=read_public_key(config.release_public_key),
                         manifest_file=manifest_path(config.data_dir), nonces=nonces,
                         appraise=appraise, min_version_for=min_version_for,
                         audit=AuditLog(config.audit_log))
    _register_errors(app)

    @app.get("/health")
    def health():
        return {"status": "ok", "hardening": process_hardening()}

    @app.post("/nonce")
    def nonce():
        try:
            issued = nonces.issue()
        except NonceStoreFull:
            return _error(503, "too many outstanding nonces; retry shortly")
        return {"nonce": issued.hex(), "ttl_seconds": config.nonce_ttl_seconds}

    @app.post("/key")
    def key():
        try:
            answer = release.handle(read_json_request(request, config.max_request_bytes), request.remote_addr)
        except JsonError as exc:  # not JSON at all: refused before the audit log, which is for key requests
            return _error(exc.status, str(exc))
        except Refusal as r:
            app.logger.info("key refused: check=%s status=%d", r.check, r.status)
            return _error(r.status, r.message)
        except AuditError:
            app.logger.error("audit log unavailable; key request not served")
            return _error(503, "audit log unavailable; no key released")
        app.logger.info("key released: key_id=%s", answer["key_id"])
        return answer

    return app
