"""What every TwinTEE HTTP service shares (node1, node2, the broker): one JSON error shape for every
failure, one ConfigError for every process's settings (and one way an entry point refuses to start
over it), and request counting with GET /metrics.

Why here and not in a new top-level package: the broker may import only broker/ and attestation/
(tests/test_layout.py), every role's measurement and image already cover attestation/, and the JSON
request reader these handlers answer for lives beside them (attestation.canonical). A package of its
own would add a folder to every measurement, Dockerfile and layout rule for some sixty lines.
"""
import logging
import sys
from typing import Mapping

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from attestation.canonical import JsonError

log = logging.getLogger("twintee.http")

# werkzeug's own errors by their short names: its long descriptions can quote the request.
HTTP_ERROR_NAMES = {400: "malformed request", 413: "request body too large"}


class ConfigError(ValueError):
    """A setting is missing or out of range; the message names the variable."""


def config_or_exit(read, env: Mapping[str, str]):
    """An entry point's config, or one line naming the setting at fault and exit status 4, which
    gunicorn reports as "App failed to load" without a stack trace (and does not respawn)."""
    try:
        return read(env)
    except ConfigError as exc:
        print(f"twintee: refusing to start: {exc}", file=sys.stderr, flush=True)
        sys.exit(4)


class ApiError(Exception):
    """A refusal with an HTTP status and a message that names the problem."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_error(status: int, message: str):
    return jsonify({"error": message}), status


def install_error_handlers(app: Flask) -> None:
    """Every failure becomes `{"error": message}` with its status; never a stack trace or HTML."""

    @app.errorhandler(ApiError)
    def _api(exc: ApiError):
        body, status = json_error(exc.status, exc.message)
        body.headers.update(exc.headers)
        return body, status

    @app.errorhandler(JsonError)
    def _json(exc: JsonError):
        return json_error(exc.status, str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        return json_error(exc.code or 500, HTTP_ERROR_NAMES.get(exc.code, exc.name.lower()))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.error("unhandled %s", type(exc).__name__)  # the type only: messages may hold content
        return json_error(500, "internal error")


def install_metrics(app: Flask, metrics, refresh=None) -> None:
    """Counts every request by route and status in `metrics.requests`, and serves GET /metrics
    (`metrics.exposition()`, refreshing gauges first)."""

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
