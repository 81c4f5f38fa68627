"""The gate in front of node1's generation routes: the caller's key (node1/tenants.py), its quotas
(node1/quotas.py), and one ledger row per generation written before the reply's last byte
(node1/ledger.py). Plain routes pass through a before/after_request pair; the sealed routes, whose key
travels inside the sealed request, call `Gate.admit` and `metered` themselves."""
import io
import json
import time

from flask import Flask, Response, g, jsonify, request

from node1 import openai_shapes as shapes
from node1.ledger import Ledger, UsageRow
from node1.openai_request import DEFAULT_MAX_TOKENS
from node1.quotas import PolicyRefused, QuotaExceeded, Quotas
from node1.store import Store
from node1.tenants import Tenant, Tenants, Unauthorized

GENERATIONS = {"/generate": "chat", "/v1/chat/completions": "chat", "/v1/completions": "text"}
GATED_PREFIXES = ("/generate", "/v1/")
# Outside GATED_PREFIXES, open to anyone as the issue asks: the page and its assets, /health,
# /attestation, /policy, /openapi.json. Inside, open for these reasons (tests/test_auth.py,
# tests/test_response_signing.py):
# - /v1/sealed/*: the key travels inside the sealed request; the route checks it once it is opened.
# - /v1/attestation/report: public evidence over the caller's nonce, as /attestation gives anyone; the
#   signing key's binding is what lets a stranger trust a signed response at all.
# - /v1/signature/{id}: a record is two SHA-256 hashes and a signature, found only by an id of 96 random
#   bits its caller received. Whoever the caller hands the files and the id (an auditor, a court) must
#   be able to check them without a key; `python -m client verify-signature` sends none.
OPEN_PREFIXES = ("/v1/sealed/", "/v1/attestation/report", "/v1/signature/")


def refusal(exc: Exception) -> tuple[dict, int, dict]:
    """A gate refusal -> (OpenAI's error body, status, headers)."""
    if isinstance(exc, Unauthorized):
        return shapes.error(401, str(exc), None, "invalid_api_key"), 401, {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, QuotaExceeded):
        return shapes.error(429, str(exc), None, "rate_limit_exceeded"), 429, {"Retry-After": str(exc.retry_after)}
    # A model or max_tokens the policy never allows is not "over a limit" for a while: no wait makes it
    # pass, so any Retry-After would lie, and the official openai client retries every 429 by itself
    # (twice by default, as told) while it raises PermissionDeniedError on a 403 at once.
    return shapes.error(403, str(exc), exc.param, exc.code), 403, {}


class Grant:
    """One admitted request: records its usage once and gives its concurrent slot back once."""

    def __init__(self, gate: "Gate", tenant: Tenant, generation: bool):
        self.gate, self.tenant, self.generation = gate, tenant, generation
        self.recorded = self.closed = False

    def record(self, usage: dict | None, finish_reason: str | None) -> None:
        if self.recorded or not self.generation or not usage:
            return
        self.recorded = True
        self.gate.record(self.tenant, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                         finish_reason or "unknown")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.generation:
                self.gate.quotas.release(self.tenant)


class Gate:
    def __init__(self, tenants: Tenants, quotas: Quotas, ledger: Ledger, rt, max_new_tokens: int):
        self.tenants, self.quotas, self.ledger, self.rt = tenants, quotas, ledger, rt
        self.max_new_tokens = max_new_tokens

    @classmethod
    def open(cls, config, rt) -> "Gate":
        store = Store.open(config.ledger_url, config.tee.data_dir)
        ledger = Ledger(store, attest=lambda public_key: _ledger_evidence(rt, public_key))
        return cls(Tenants(store), Quotas(ledger), ledger, rt, config.model.max_new_tokens)

    def admit(self, authorization: str | None, path: str, body) -> Grant:
        """Unauthorized, PolicyRefused or QuotaExceeded, else the request's Grant."""
        tenant = self.tenants.authenticate(authorization)
        generation = path in GENERATIONS
        body = body() if callable(body) else body  # read only for a caller with a key
        if generation and isinstance(body, dict):
            self.quotas.check_request(tenant, _model(path, body), self._max_tokens(path, body))
        self.quotas.acquire(tenant, generation)
        return Grant(self, tenant, generation)

    def record(self, tenant: Tenant, prompt_tokens: int, completion_tokens: int, finish_reason: str) -> None:
        node1, node2, layers1, layers2 = node_pair(self.rt)
        self.ledger.record(UsageRow(tenant.name, time.time(), _model_id(self.rt), prompt_tokens, completion_tokens,
                                    finish_reason, node1, node2, layers1, layers2))

    def _max_tokens(self, path: str, body: dict) -> int | None:
        if path == "/generate":
            asked = body.get("max_tokens", DEFAULT_MAX_TOKENS["chat"])
        else:
            asked = body.get("max_completion_tokens", body.get("max_tokens"))
            if asked is None:
                asked = min(DEFAULT_MAX_TOKENS[GENERATIONS[path]], self.max_new_tokens)
        return asked if isinstance(asked, int) else None  # not a number: the route's own 400 says so


def _model(path: str, body: dict) -> str | None:
    return body.get("model") if path != "/generate" and isinstance(body.get("model"), str) else None


def _model_id(rt) -> str:
    return getattr(getattr(rt, "release", None), "model_id", None) or "unknown"


def node_pair(rt) -> tuple[str, str, int, int]:
    """(node1's measurement, node2's as appraised, layers each computed): who served a request."""
    identity, release = getattr(rt, "identity", None), getattr(rt, "release", None)
    node1 = (getattr(identity, "measurement", None) or {}).get("measurement", "unknown")
    links = getattr(rt, "links", None) or []
    verdict = next((link.peer_verdict for link in links if getattr(link, "peer_verdict", None)), None) or {}
    layers1 = layers2 = 0
    if hasattr(release, "layers_of"):
        (a, b), (c, d) = release.layers_of("node1"), release.layers_of("node2")
        layers1, layers2 = b - a, d - c
    return node1, str(verdict.get("measurement") or "unknown"), layers1, layers2


def _ledger_evidence(rt, public_key: bytes) -> dict:
    """Evidence binding the ledger's signing key to this node1's measurement (checked by ledger-verify)."""
    from attestation.binding import LEDGER_SIGNER, report_data

    identity = getattr(rt, "identity", None)
    if not hasattr(identity, "evidence"):
        return {}
    return identity.evidence(report_data(public_key, b"", purpose=LEDGER_SIGNER))


class Watch:
    """What a reply said about its usage and finish reason, read from its JSON or its event payloads."""

    def __init__(self):
        self.usage, self.finish_reason = None, None

    def see(self, body) -> None:
        if not isinstance(body, dict):
            return
        if isinstance(body.get("usage"), dict):
            self.usage = body["usage"]
        if body.get("error") is not None and "choices" not in body:
            self.finish_reason = "error"
        reasons = [c.get("finish_reason") for c in body.get("choices") or [] if isinstance(c, dict)]
        reason = body.get("finish_reason") or next((r for r in reasons if r), None)
        if reason and self.finish_reason is None:
            self.finish_reason = reason


def metered(events, grant: Grant, usage_of=None):
    """Passes a reply's events (SSE text or bare payloads) through, writing its ledger row before the
    [DONE] event goes out; gives the grant back when the stream ends, however it ends."""
    watch = Watch()
    try:
        for event in events:
            # bytes on the signed OpenAI routes (node1/response_signing.py hashes the bytes it passes on)
            text = event.decode() if isinstance(event, bytes) else event
            data = text[6:].strip() if isinstance(text, str) and text.startswith("data: ") else text
            if data == "[DONE]":
                grant.record(usage_of() if usage_of else watch.usage, watch.finish_reason)
            elif isinstance(data, str) and data.startswith("{"):
                watch.see(json.loads(data))
            yield event
    finally:
        if not grant.recorded and usage_of is not None:  # the client went away: bill what was computed
            grant.record(usage_of(), "cancelled")
        close = getattr(events, "close", None)
        if close is not None:
            close()
        grant.close()


def meter(resp: Response, grant: Grant, sealed: bool = False) -> Response:
    """Attaches the grant to a reply: a JSON one is recorded now, a stream as its [DONE] goes out."""
    usage_of = getattr(resp, "usage_of", None)
    if resp.mimetype == "text/event-stream":
        if sealed:  # the sealed route seals the payloads, not the SSE text
            resp.payloads = metered(resp.payloads, grant, usage_of)
        else:
            resp.response = metered(resp.response, grant, usage_of)
            resp.call_on_close(grant.close)  # also when the stream never started
        return resp
    if resp.status_code == 200 and resp.is_json:
        watch = Watch()
        watch.see(resp.get_json(silent=True))
        grant.record(watch.usage, watch.finish_reason)
    grant.close()
    return resp


def sealed_call(gate: Gate, call, method: str, path: str, body, headers) -> Response:
    """The sealed OpenAI route's inner request through the gate: its refusal is sealed like any reply."""
    authorization = headers.get("Authorization") if isinstance(headers, dict) else None
    try:
        grant = gate.admit(authorization, path, body)
    except (Unauthorized, QuotaExceeded, PolicyRefused) as exc:
        err, status, extra = refusal(exc)
        return Response(json.dumps(err), status=status, headers=extra, mimetype="application/json")
    try:
        return meter(call(method, path, body), grant, sealed=True)
    except BaseException:
        grant.close()
        raise


def peek_json(req, max_bytes: int):
    """The request's JSON body for the gate's policy check, read within the route's own limit and put
    back, so the route reads (and refuses) exactly what was sent; None when it is not readable JSON."""
    if req.mimetype != "application/json" or (req.content_length or 0) > max_bytes:
        return None
    raw = req.stream.read(max_bytes + 1)
    req.__dict__["stream"] = io.BytesIO(raw)  # werkzeug caches `stream` here: the route reads this copy
    try:
        return json.loads(raw) if len(raw) <= max_bytes else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def install_gate(app: Flask, gate: Gate, max_body_bytes: int) -> None:
    """Keys and quotas on /generate and /v1/*, the ledger row on each generation, and GET /v1/usage."""
    app.extensions["twintee_gate"] = gate

    @app.before_request
    def _admit():
        path = request.path
        if not path.startswith(GATED_PREFIXES) or path.startswith(OPEN_PREFIXES):
            return None
        body = (lambda: peek_json(request, max_body_bytes)) if path in GENERATIONS else None
        try:
            g.grant = gate.admit(request.headers.get("Authorization"), path, body)
        except (Unauthorized, QuotaExceeded, PolicyRefused) as exc:
            err, status, headers = refusal(exc)
            return jsonify(err), status, headers
        return None

    @app.after_request
    def _meter(resp):
        grant = g.pop("grant", None)
        return meter(resp, grant) if grant is not None else resp

    @app.teardown_request
    def _release(exc):
        grant = g.pop("grant", None)  # only when the route failed before after_request ran
        if grant is not None:
            grant.close()

    @app.get("/v1/usage")
    def usage():
        return jsonify({"object": "list", "data": gate.ledger.usage_by_day(g.grant.tenant.name)})
