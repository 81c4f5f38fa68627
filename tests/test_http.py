"""shared/http.py and attestation/service.py: JSON bodies only, bounded while read, and every refusal a
JSON body naming the problem, from one handler that node1, node2 and the broker all install."""
import io

import pytest
from flask import Flask, jsonify, request

from attestation.canonical import MAX_JSON_DEPTH, JsonError
from attestation.service import ApiError
from attestation.service import install_error_handlers
from shared.http import json_body

LIMIT = 64 * 1024


@pytest.fixture
def client():
    app = Flask(__name__)
    install_error_handlers(app)

    @app.post("/echo")
    def echo():
        return jsonify({"got": json_body(request, LIMIT)})

    return app.test_client()


def test_json_round_trips(client):
    r = client.post("/echo", json={"prompt": "hi"})
    assert r.status_code == 200 and r.get_json() == {"got": {"prompt": "hi"}}


@pytest.mark.parametrize("kwargs", [
    {"data": '{"prompt": "hi"}', "content_type": "text/plain"},  # what a cross-site page may send
    {"data": {"prompt": "hi"}},  # a form
    {"data": '{"prompt": "hi"}'},  # no content type at all
])
def test_other_content_types_get_415(client, kwargs):
    r = client.post("/echo", **kwargs)
    assert r.status_code == 415 and "Content-Type: application/json" in r.get_json()["error"]


@pytest.mark.parametrize("raw, names", [
    ('{"prompt": "\\ud800"}', "lone surrogate"),
    ("[" * 20_000 + "]" * 20_000, "nests deeper"),  # past the parser's recursion limit
    ("[" * (MAX_JSON_DEPTH + 2) + "]" * (MAX_JSON_DEPTH + 2), "nests deeper"),
    ('{"prompt": ', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_malformed_json_of_any_kind_is_a_400_naming_it(client, raw, names):
    r = client.post("/echo", data=raw, content_type="application/json")
    assert r.status_code == 400 and names in r.get_json()["error"]


def test_a_body_without_a_length_is_cut_off_at_the_limit_not_buffered():
    app = Flask(__name__)
    install_error_handlers(app)
    read = {}

    @app.post("/echo")
    def echo():
        stream = request.stream
        try:
            return jsonify(json_body(request, LIMIT))
        finally:
            read["rest"] = len(stream.read())

    body = io.BytesIO(b'{"x": "' + b"a" * (LIMIT * 100) + b'"}')
    r = app.test_client().post("/echo", input_stream=body, content_type="application/json",
                               environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 413
    assert read["rest"] > LIMIT * 90  # json_body stopped after LIMIT + 1 bytes; the rest was never read


def test_every_failure_is_a_json_body_with_its_status():
    app = Flask(__name__)
    install_error_handlers(app)

    @app.get("/api")
    def api():
        raise ApiError(409, "no such session", {"Retry-After": "1"})

    @app.get("/json")
    def json_error():
        raise JsonError("the request body is not valid JSON")

    @app.get("/boom")
    def boom():
        raise RuntimeError("a message that may hold a prompt")

    c = app.test_client()
    expected = {"/api": (409, "no such session"), "/json": (400, "the request body is not valid JSON"),
                "/boom": (500, "internal error"), "/nope": (404, "not found")}
    for path, (status, message) in expected.items():
        r = c.get(path)
        assert (r.status_code, r.get_json()) == (status, {"error": message}), path
    assert c.get("/api").headers["Retry-After"] == "1"
    r = c.post("/api")
    assert (r.status_code, r.get_json()) == (405, {"error": "method not allowed"})
