"""HTTP plumbing both nodes share: JSON errors for every failure, never a stack trace to a client."""
import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from attestation.canonical import JsonError, hex_field, read_json_request

log = logging.getLogger("twintee.http")


class ApiError(Exception):
    """A refusal with an HTTP status and a message that names the problem."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_error(status: int, message: str):
    return jsonify({"error": message}), status


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api(exc: ApiError):
        body, status = json_error(exc.status, exc.message)
        body.headers.update(exc.headers)
        return body, status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        names = {400: "malformed request", 413: "request body too large"}
        return json_error(exc.code or 500, names.get(exc.code, exc.name.lower()))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.error("unhandled %s", type(exc).__name__)  # the type only: messages may hold content
        return json_error(500, "internal error")


CHALLENGE_BYTES = (16, 64)  # a challenger's nonce for /attestation, both nodes alike


def challenge_nonce(value: str) -> bytes:
    """The `nonce` query parameter of GET /attestation: 16 to 64 bytes of hex, else a 400."""
    nonce = hex_field(value, CHALLENGE_BYTES)
    if nonce is None:
        hex_of_wrong_size = hex_field(value) is not None
        raise ApiError(400, f"nonce must be {CHALLENGE_BYTES[0]} to {CHALLENGE_BYTES[1]} bytes of hex"
                       if hex_of_wrong_size else "nonce must be hex")
    return nonce


def install_metrics(app: Flask, metrics, refresh=None) -> None:
    """Counts every request by route and status, and serves GET /metrics (refreshing gauges first)."""

    @app.after_request
    def _count(response):
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(endpoint=rule, status=str(response.status_code)).inc()
        return response

    @app.get("/metrics")
    def _metrics():
        if refresh:
            refresh()
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)


def json_body(req, max_bytes: int) -> object:
    """The request's JSON value, or the 4xx attestation.canonical.read_json_request names."""
    try:
        return read_json_request(req, max_bytes)
    except JsonError as exc:
        raise ApiError(exc.status, str(exc)) from None
