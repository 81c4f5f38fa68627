"""Parses and checks a POST /generate body; every refusal names the field and the limit."""
from dataclasses import dataclass, field

from shared.sampling import SamplingError, SamplingParams

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 64


class BadRequest(ValueError):
    """The client's request is malformed or out of range (-> 400 with this message)."""


@dataclass(frozen=True)
class GenerateRequest:
    messages: tuple[dict, ...]
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    stream: bool = False


def _messages(body: dict) -> tuple[dict, ...]:
    if "messages" in body:
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise BadRequest("'messages' must be a non-empty list of {role, content}")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise BadRequest(f"messages[{i}] must be an object with a string 'content'")
            if m.get("role") not in ROLES:
                raise BadRequest(f"messages[{i}].role must be one of {list(ROLES)}")
        return tuple({"role": m["role"], "content": m["content"]} for m in msgs)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("give either 'prompt' (a non-empty string) or 'messages'")
    return ({"role": "user", "content": prompt},)


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > MAX_STOP_STRINGS:
        raise BadRequest(f"'stop' must be a list of at most {MAX_STOP_STRINGS} strings")
    if not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stop):
        raise BadRequest(f"each stop string must be 1 to {MAX_STOP_CHARS} characters")
    return tuple(stop)


def parse_generate(body, max_new_tokens: int) -> GenerateRequest:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    max_tokens = body.get("max_tokens", 256)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_new_tokens:
        raise BadRequest(f"'max_tokens' must be an integer from 1 to {max_new_tokens}")
    try:
        sampling = SamplingParams.from_dict(body)
    except SamplingError as err:
        raise BadRequest(str(err)) from None
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    return GenerateRequest(
        messages=_messages(body),
        max_tokens=max_tokens,
        sampling=sampling,
        stop=_stop(body),
        stream=stream,
    )
