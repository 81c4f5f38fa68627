"""Parses and checks the bodies of POST /v1/chat/completions and /v1/completions into one OpenAIRequest
over the existing GenerateRequest and SamplingParams; every refusal names OpenAI's `param`."""
import hashlib
from dataclasses import dataclass, replace

from node1.request import MAX_STOP_CHARS, MAX_STOP_STRINGS, ROLES, GenerateRequest
from shared.sampling import MAX_LOGPROBS, MAX_SEED, SamplingError, SamplingParams

MAX_CHOICES = 4  # n: each choice is one more session in the batch, with its own KV cache on both nodes
DEFAULT_MAX_TOKENS = {"chat": 256, "text": 16}  # /generate's default; OpenAI's for legacy completions
# Fields whose other values ask for something TwinTEE does not do: refused by name rather than ignored.
UNSUPPORTED = {"tools": (None, []), "functions": (None, []), "tool_choice": (None, "none"),
               "logit_bias": (None, {}), "frequency_penalty": (None, 0), "presence_penalty": (None, 0),
               "response_format": (None, {"type": "text"}), "echo": (None, False), "best_of": (None, 1),
               "suffix": (None, "")}


class InvalidRequest(ValueError):
    """A field is missing, malformed, out of range or unsupported (-> 400 invalid_request_error)."""

    def __init__(self, message: str, param: str | None, code: str = "invalid_value"):
        super().__init__(message)
        self.param, self.code = param, code


class ModelNotFound(InvalidRequest):
    """The request names a model this release does not serve (-> 404, param "model")."""

    def __init__(self, model: str):
        super().__init__(f"the model '{model}' does not exist; this node serves one model: see GET /v1/models",
                         "model", "model_not_found")


@dataclass(frozen=True)
class OpenAIRequest:
    kind: str  # "chat" | "text": which endpoint, and so which response shapes
    messages: tuple[dict, ...] | None  # chat: templated by node1's codec
    prompt: str | None  # text: tokenized as it is, no template
    max_tokens: int
    sampling: SamplingParams  # logprobs: None, or the candidates per token (0..5)
    stop: tuple[str, ...] = ()
    n: int = 1
    stream: bool = False
    include_usage: bool = False

    def choice(self, i: int) -> GenerateRequest:
        """Choice i as a /generate request: i = 0 keeps the seed (so n = 1 equals /generate), the others
        derive theirs from it, so a seeded request is reproducible choice by choice."""
        sampling = self.sampling
        if i and sampling.seed is not None:
            digest = hashlib.sha256(f"{sampling.seed}:{i}".encode()).digest()
            sampling = replace(sampling, seed=int.from_bytes(digest[:8], "big") & MAX_SEED)
        return GenerateRequest(self.messages or (), self.max_tokens, sampling, self.stop, self.stream)


def parse_chat(body, max_new_tokens: int, model_id: str) -> OpenAIRequest:
    body = _object(body)
    logprobs = _get(body, "logprobs", bool, False)
    top = _get(body, "top_logprobs", int, None)
    if top is not None and not logprobs:
        raise InvalidRequest("'top_logprobs' needs 'logprobs' set to true", "top_logprobs")
    if top is not None and not 0 <= top <= MAX_LOGPROBS:
        raise InvalidRequest(f"'top_logprobs' must be an integer from 0 to {MAX_LOGPROBS}", "top_logprobs")
    limit = _get(body, "max_completion_tokens", int, None)  # OpenAI's newer name wins over max_tokens
    name = "max_completion_tokens" if limit is not None else "max_tokens"
    return _common(body, "chat", max_new_tokens, model_id, messages=_messages(body), prompt=None,
                   logprobs=(top or 0) if logprobs else None, max_name=name)


def parse_text(body, max_new_tokens: int, model_id: str) -> OpenAIRequest:
    body = _object(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequest("'prompt' must be a non-empty string", "prompt")
    logprobs = _get(body, "logprobs", int, None)
    if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
        raise InvalidRequest(f"'logprobs' must be an integer from 0 to {MAX_LOGPROBS}", "logprobs")
    return _common(body, "text", max_new_tokens, model_id, messages=None, prompt=prompt, logprobs=logprobs,
                   max_name="max_tokens")


def _common(body: dict, kind: str, max_new_tokens: int, model_id: str, *, messages, prompt, logprobs,
            max_name: str) -> OpenAIRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be given as a string", "model", "missing_required_parameter")
    _refuse_unsupported(body)
    _get(body, "user", str, None)  # accepted, checked, not used yet
    max_tokens = _get(body, max_name, int, min(DEFAULT_MAX_TOKENS[kind], max_new_tokens))
    if not 1 <= max_tokens <= max_new_tokens:
        raise InvalidRequest(f"'{max_name}' must be an integer from 1 to {max_new_tokens}", max_name)
    n = _get(body, "n", int, 1)
    if not 1 <= n <= MAX_CHOICES:
        raise InvalidRequest(f"'n' must be an integer from 1 to {MAX_CHOICES}", "n")
    stream = _get(body, "stream", bool, False)
    options = _get(body, "stream_options", dict, None)
    if options is not None and not stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", "stream_options")
    include_usage = _get(options or {}, "include_usage", bool, False, "stream_options.include_usage")
    if model != model_id:
        raise ModelNotFound(model)
    return OpenAIRequest(kind, messages, prompt, max_tokens, _sampling(body, logprobs), _stop(body), n, stream,
                         include_usage)


def _sampling(body: dict, logprobs: int | None) -> SamplingParams:
    values = {name: body.get(name) for name in ("temperature", "top_p", "seed")}
    defaults = {"temperature": 1.0, "top_p": 1.0}  # OpenAI's: sampling unless asked for temperature 0
    try:
        return SamplingParams(**{k: defaults.get(k) if v is None else v for k, v in values.items()},
                              logprobs=logprobs)
    except SamplingError as err:
        param = next((name for name in values if f"'{name}'" in str(err)), None)
        raise InvalidRequest(str(err), param) from None


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"'stop' must be a string or a list of at most {MAX_STOP_STRINGS} strings", "stop")
    if not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stop):
        raise InvalidRequest(f"each stop string must be 1 to {MAX_STOP_CHARS} characters", "stop")
    return tuple(stop)


def _messages(body: dict) -> tuple[dict, ...]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise InvalidRequest("'messages' must be a non-empty list of {role, content}", "messages")
    return tuple(_message(m, f"messages[{i}]") for i, m in enumerate(msgs))


def _message(m, where: str) -> dict:
    if not isinstance(m, dict):
        raise InvalidRequest(f"{where} must be an object with 'role' and 'content'", where)
    role = "system" if m.get("role") == "developer" else m.get("role")  # OpenAI's newer name for system
    if role not in ROLES:
        raise InvalidRequest(f"{where}.role must be one of {list(ROLES) + ['developer']}", f"{where}.role")
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text ones, joined as vLLM joins them
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise InvalidRequest(f"{where}.content parts must all be {{type: 'text', text: str}}", f"{where}.content")
        content = "\n".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise InvalidRequest(f"{where}.content must be a string or a list of text parts", f"{where}.content")
    return {"role": role, "content": content}


def _refuse_unsupported(body: dict) -> None:
    for name, allowed in UNSUPPORTED.items():
        value = body.get(name)
        if not any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed):
            raise InvalidRequest(f"'{name}' is not supported here; leave it out", name, "unsupported_parameter")


def _get(body: dict, name: str, kind: type, default, param: str | None = None):
    """body[name] if present and not null, of `kind` (an int is not a bool; a float must be finite)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise InvalidRequest(f"'{param or name}' must be {_KINDS[kind]}", param or name)
    return value


_KINDS = {bool: "true or false", int: "an integer", str: "a string", dict: "an object"}


def _object(body) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", None)
    return body

