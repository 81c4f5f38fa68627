"""The JSON shapes of OpenAI's API as node1 returns them: completions, stream chunks, logprobs, usage,
models and errors (as the official `openai` package parses them; vLLM's server returns the same)."""
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

TokenText = Callable[[int], str]  # one token id -> its text, as the codec decodes it alone


@dataclass
class ChoiceResult:
    """What one choice produced: its text, why it ended, and its tokens (those with logprobs carry them)."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    tokens: list = field(default_factory=list)


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(kind: str, rid: str, created: int, model: str, choices: list[ChoiceResult], use: dict,
               token_text: TokenText, want_logprobs: bool) -> dict:
    """The whole reply of a request that did not stream."""
    shaped = [_choice(kind, c.index, c.text, c.finish_reason, c.tokens, token_text, want_logprobs, 0, first=True)
              for c in choices]
    return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion", "created": created,
            "model": model, "choices": shaped, "usage": use}


def chunk(kind: str, rid: str, created: int, model: str, choices: list[dict], include_usage: bool) -> dict:
    """One stream event; with include_usage every chunk says `usage: null` but the last, as OpenAI's do."""
    body = {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": created, "model": model, "choices": choices}
    if include_usage:
        body["usage"] = None
    return body


def chunk_choice(kind: str, index: int, text: str, tokens: list, token_text: TokenText, want_logprobs: bool,
                 offset: int, *, first: bool = False, finish_reason: str | None = None) -> dict:
    """One choice's part of a chunk: a chat delta (with the role on the choice's first) or a text piece."""
    return _choice(kind, index, text, finish_reason, tokens, token_text, want_logprobs, offset, first=first,
                   delta=True)


def _choice(kind, index, text, finish_reason, tokens, token_text, want_logprobs, offset, *, first, delta=False):
    logprobs = None
    if want_logprobs:
        logprobs = chat_logprobs(tokens, token_text) if kind == "chat" else text_logprobs(tokens, token_text, offset)
    if kind == "text":
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
    if not delta:
        message = {"role": "assistant", "content": text, "refusal": None}
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}
    body = {"role": "assistant", "content": text} if first else ({"content": text} if text or not finish_reason else {})
    return {"index": index, "delta": body, "logprobs": logprobs, "finish_reason": finish_reason}


def chat_logprobs(tokens: list, token_text: TokenText) -> dict:
    """{"content": [{token, bytes, logprob, top_logprobs: [{token, bytes, logprob}]}]} for the chat API."""
    def entry(token_id: int, logprob: float) -> dict:
        text = token_text(token_id)
        return {"token": text, "bytes": list(text.encode()), "logprob": logprob}

    return {"content": [{**entry(t, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
                        for t in tokens if getattr(t, "logprob", None) is not None], "refusal": None}


def text_logprobs(tokens: list, token_text: TokenText, offset: int) -> dict:
    """The legacy completions shape: parallel lists, `text_offset` counting characters from `offset`."""
    tokens = [t for t in tokens if getattr(t, "logprob", None) is not None]
    texts = [token_text(t) for t in tokens]
    offsets = []
    for text in texts:
        offsets.append(offset)
        offset += len(text)
    return {"tokens": texts, "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{token_text(i): lp for i, lp in t.top} for t in tokens], "text_offset": offsets}


def models(model_id: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "twintee"}]}


ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error",
               413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error"}
ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
               502: "upstream_failed", 503: "service_unavailable", 500: "internal_error"}


def error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """{"error": {message, type, param, code}}, `code` always a string as the issue asks."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error" if status >= 500 else
                                                                        "invalid_request_error"),
                      "param": param, "code": code or ERROR_CODES.get(status, "invalid_value")}}
