"""The OpenAPI 3.1 description of node1's HTTP API, served at GET /openapi.json: hand-written, with the
limits of this node's config, and checked against the routes (tests/test_openapi.py) and the running
node (schemathesis, tests/test_e2e_openapi.py)."""
from node1.config import Node1Config
from node1.openai_request import MAX_CHOICES
from node1.request import MAX_STOP_CHARS, MAX_STOP_STRINGS, ROLES
from shared.http import CHALLENGE_BYTES
from shared.sampling import MAX_LOGPROBS, MAX_SEED, MAX_TEMPERATURE

JSON = "application/json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(shape: str, *statuses: int) -> dict:
    """Every refusal, in the route's error shape: OpenAI's object for /v1/*, {"error": str} for the rest."""
    names = {400: "invalid request", 401: "no, unknown or revoked API key", 403: "outside the key's policy",
             404: "not found", 429: "over the key's quota (Retry-After)", 405: "method not allowed", 413: "body too large",
             415: "not JSON", 500: "internal error", 502: "node2 failed the generation",
             503: "not ready, or at capacity (Retry-After)"}
    return {str(s): _json(_ref(shape), names[s]) for s in statuses}


def _post(summary: str, request: str, ok: dict, shape: str, examples: list | None = None) -> dict:
    body = {"schema": _ref(request)}
    if examples:  # each one is sent first by schemathesis: the plain reply and the stream both get checked
        body["examples"] = {f"example{i}": {"value": v} for i, v in enumerate(examples)}
    return {"post": {"summary": summary, "requestBody": {"required": True, "content": {JSON: body}},
                     "responses": {"200": ok, **_errors(shape, 400, 404, 405, 413, 415, 500, 502, 503)}}}


def _stream_or(schema: str, event: dict | None, description: str) -> dict:
    """JSON, or with "stream": true server-sent events: each `data` one JSON `event` (when given) or [DONE]."""
    return {"description": description, "content": {JSON: {"schema": _ref(schema)},
                                                    "text/event-stream": {"schema": _sse_event(event)}}}


def _sse_event(data: dict | None) -> dict:
    # OpenAPI 3.1 has a text/event-stream schema describe one event as schemathesis reads it: {data, event, ...}
    payload = {"type": "string"} if data is None else {"anyOf": [
        {"const": "[DONE]"}, {"type": "string", "contentMediaType": JSON, "contentSchema": data}]}
    return {"type": "object", "required": ["data"], "properties": {"data": payload}}


def _get(summary: str, ok: dict, shape: str = "Error", params: list | None = None, fail: tuple = (),
         extra: dict | None = None) -> dict:
    op = {"summary": summary, "responses": {"200": ok, **_errors(shape, 405, 500, *fail), **(extra or {})}}
    if params:
        op["parameters"] = params
    return {"get": op}


def _chunk_or_error(obj: str) -> dict:
    """One stream event of /v1/*: a chunk (choices: [] on the usage chunk) or the error that ended it."""
    chunk = {"type": "object", "required": ["id", "object", "created", "model", "choices"], "properties": {
        "object": {"const": obj}, "id": {"type": "string"}, "created": {"type": "integer"}, "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object", "required": ["index", "finish_reason"], "properties": {
            "index": {"type": "integer"}, "finish_reason": {"enum": ["stop", "length", None]}}}}}}
    return {"anyOf": [chunk, _ref("OpenAIError")]}


def openapi(config: Node1Config, model_id: str | None) -> dict:
    """model_id: the one model this node serves, once its release is loaded (any other is a 404)."""
    say_hi = [{"role": "user", "content": "Say hi."}]
    chat = [{"model": model_id, "messages": say_hi, "max_tokens": 3},
            {"model": model_id, "messages": say_hi, "max_tokens": 3, "n": 2, "stream": True, "logprobs": True,
             "top_logprobs": 2, "stream_options": {"include_usage": True}}]
    text = [{"model": model_id, "prompt": "Hi", "max_tokens": 3, "logprobs": 2},
            {"model": model_id, "prompt": "Hi", "max_tokens": 3, "stream": True}]
    lo, hi = CHALLENGE_BYTES
    nonce = [{"name": "nonce", "in": "query", "required": True,
              "schema": {"type": "string", "pattern": f"^([0-9a-fA-F]{{2}}){{{lo},{hi}}}$"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "TwinTEE node1", "version": "1",
                 "description": "Private inference split across two attested enclaves; OpenAI-compatible under /v1."},
        "paths": {
            "/v1/models": _get("The model this release serves", _json(_ref("ModelList"), "the model"), "OpenAIError",
                               fail=(503,)),
            "/v1/chat/completions": _post("Chat completion (OpenAI)", "ChatRequest",
                                          _stream_or("ChatCompletion", _chunk_or_error("chat.completion.chunk"),
                                                     "the completion, or its chunks as SSE"),
                                          "OpenAIError", chat if model_id else None),
            "/v1/completions": _post("Text completion of a raw prompt (OpenAI)", "CompletionRequest",
                                     _stream_or("TextCompletion", _chunk_or_error("text_completion"),
                                                     "the completion, or its chunks as SSE"),
                                     "OpenAIError", text if model_id else None),
            "/v1/usage": _get("The calling tenant's totals per UTC day (node1/ledger.py)",
                              _json({"type": "object"}, "{object: list, data: [{date, requests, tokens}]}"),
                              "OpenAIError", fail=(401, 429)),
            "/generate": _post("TwinTEE's own generation endpoint", "GenerateRequest",
                               _stream_or("GenerateReply", None, "the reply, or one SSE event per token"), "Error",
                               [{"messages": say_hi, "max_tokens": 3}, {"prompt": "Hi", "max_tokens": 3, "stream": True}]),
            "/v1/sealed/generate": _post("/generate HPKE-sealed to node1's attested key", "SealedRequest",
                                         {"description": "sealed SSE events",
                                          "content": {"text/event-stream": {"schema": _sse_event(None)}}}, "Error"),
            "/v1/sealed/openai": _post("An OpenAI request HPKE-sealed to node1's attested key (client/openai_transport.py)",
                                       "SealedRequest",
                                       {"description": "sealed SSE events: head, body, [DONE]",
                                        "content": {"text/event-stream": {"schema": _sse_event(None)}}}, "OpenAIError"),
            "/v1/signature/{completion_id}": _get(
                "The signed record of a recent completion: Ed25519 over \"<request sha256>:<response sha256>\"",
                _json(_ref("SignatureRecord"), "the record"), "OpenAIError",
                params=[{"name": "completion_id", "in": "path", "required": True,
                         "schema": {"type": "string", "minLength": 1}}], fail=(404,)),
            "/v1/attestation/report": _get("Both nodes' evidence and node1's evidence binding its signing key, "
                                           "over the nonce", _json(_ref("SigningReport"), "the report"),
                                           "OpenAIError", params=nonce, fail=(400, 503)),
            "/attestation": _get("Fresh evidence of both nodes bound to the nonce", _json({"type": "object"}, "evidence"),
                                 params=nonce, fail=(400, 503)),
            "/policy": _get("The signed reference values of the release", _json({"type": "object"}, "the policy"),
                            fail=(503,)),
            "/health": _get("Ready only with the model loaded and an attested channel to node2",
                            _json(_ref("Health"), "ready"), extra={"503": _json(_ref("Health"), "not ready: why")}),
            "/metrics": _get("Prometheus metrics (never content)",
                             {"description": "exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}),
            "/openapi.json": _get("This description", _json({"type": "object"}, "OpenAPI 3.1")),
            "/": _get("The chat page", {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}),
            "/webui/{name}": _get("The page's scripts and styles", {"description": "a file", "content": {"*/*": {}}},
                                  params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                                  fail=(404,)),
        },
        "components": {"schemas": _schemas(config, model_id),
                       # /generate and /v1/* but the sealed routes (their key is inside the seal), a
                       # signature lookup and the attestation report: node1/auth.py OPEN_PREFIXES says why
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
    }


def _schemas(config: Node1Config, model_id: str | None) -> dict:
    return {**_request_schemas(config, model_id), **_reply_schemas()}


def _request_schemas(config: Node1Config, model_id: str | None) -> dict:
    max_new = config.model.max_new_tokens
    stop = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS},
                      {"type": "array", "maxItems": MAX_STOP_STRINGS,
                       "items": {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS}}, {"type": "null"}]}
    sampling = {
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_TEMPERATURE},
        "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED},
        "stop": stop,
        "stream": {"type": ["boolean", "null"]},
    }
    openai_common = {
        "model": {"enum": [model_id]} if model_id else {"type": "string", "minLength": 1},
        "max_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": max_new},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_CHOICES},
        "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean"}}},
        "user": {"type": "string"},
        **sampling,
    }
    message = {"type": "object", "required": ["role", "content"], "properties": {
        "role": {"enum": [*ROLES, "developer"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {
            "type": "object", "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}}]}}}
    return {
        "ChatRequest": {"type": "object", "required": ["model", "messages"], "properties": {
            **openai_common, "messages": {"type": "array", "minItems": 1, "items": message},
            "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": max_new},
            "logprobs": {"type": ["boolean", "null"]},
            "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_LOGPROBS}}},
        "CompletionRequest": {"type": "object", "required": ["model", "prompt"], "properties": {
            **openai_common, "prompt": {"type": "string", "minLength": 1},
            "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_LOGPROBS}}},
        "GenerateRequest": {"type": "object", "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "minItems": 1, "items": {**message, "properties": {
                "role": {"enum": list(ROLES)}, "content": {"type": "string"}}}},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": max_new}, **sampling}},
        "SealedRequest": {"type": "object", "required": ["enc", "ciphertext"], "properties": {
            "enc": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "ciphertext": {"type": "string", "pattern": "^([0-9a-f]{2})+$"}}},
    }


FINISH = {"enum": ["stop", "length"]}
USAGE = {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
         "properties": {k: {"type": "integer", "minimum": 0} for k in ("prompt_tokens", "completion_tokens",
                                                                        "total_tokens")}}


def _completion(obj: str, choice: dict) -> dict:
    """The two completion objects differ only in their `object` and their choices."""
    return {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {"id": {"type": "string"}, "object": {"const": obj}, "created": {"type": "integer"},
                           "model": {"type": "string"}, "usage": USAGE,
                           "choices": {"type": "array", "minItems": 1, "items": choice}}}


def _reply_schemas() -> dict:
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "OpenAIError": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": {"type": ["string", "null"]}, "code": {"type": "string"}}}}},
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": {
                "type": "object", "required": ["id", "object", "created", "owned_by"],
                "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                               "created": {"type": "integer"}, "owned_by": {"type": "string"}}}}}},
        "ChatCompletion": _completion("chat.completion", {
            "type": "object", "required": ["index", "message", "finish_reason", "logprobs"],
            "properties": {"index": {"type": "integer"}, "finish_reason": FINISH,
                           "logprobs": {"type": ["object", "null"]},
                           "message": {"type": "object", "required": ["role", "content"], "properties": {
                               "role": {"const": "assistant"}, "content": {"type": "string"}}}}}),
        "TextCompletion": _completion("text_completion", {
            "type": "object", "required": ["index", "text", "finish_reason", "logprobs"],
            "properties": {"index": {"type": "integer"}, "text": {"type": "string"}, "finish_reason": FINISH,
                           "logprobs": {"type": ["object", "null"]}}}),
        "GenerateReply": {"type": "object", "required": ["text", "token_ids", "finish_reason", "usage", "metrics"],
                          "properties": {"text": {"type": "string"},
                                         "token_ids": {"type": "array", "items": {"type": "integer"}},
                                         "finish_reason": FINISH, "usage": {"type": "object"},
                                         "metrics": {"type": "object"}}},
        "SignatureRecord": {"type": "object", "required": ["id", "text", "signature", "signing_key", "signing_algo"],
                            "properties": {"id": {"type": "string"},
                                           "text": {"type": "string", "pattern": "^[0-9a-f]{64}:[0-9a-f]{64}$"},
                                           "signature": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
                                           "signing_key": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                           "signing_algo": {"const": "ed25519"}}},
        "SigningReport": {"type": "object", "required": ["signing_key", "signing_algo", "request_nonce", "signing",
                                                         "node1", "node2"],
                          "properties": {"signing_key": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                         "signing_algo": {"const": "ed25519"}, "request_nonce": {"type": "string"},
                                         "signing": {"type": "object", "required": ["public_key", "evidence"]},
                                         "node1": {"type": "object"}, "node2": {"type": "object"}}},
        "Health": {"type": "object", "required": ["status", "role"], "properties": {
            "status": {"type": "string"}, "role": {"const": "node1"}}},
    }
