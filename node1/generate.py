"""One /generate request from template to text: tokenize, submit to the scheduler, stream tokens out."""
import json
import queue
import time

from attestation.service import ApiError
from node1.request import GenerateRequest, parse_generate
from node1.scheduler import REPLY_CHUNK_TOKENS, Finished, Generation, GenerationFailed
from node1.text import TextStream
from shared.config import ModelSettings

TOKEN_WAIT_S = 300.0  # a step never takes this long; past it the pipeline is stuck, not slow


def require_ready(rt):
    """The runtime, if it can serve a generation now; else a 503 naming why. Does not probe node2:
    a dead node2 shows at the first step anyway."""
    body, status = rt.health(probe=False)
    if status != 200:
        raise ApiError(503, f"not ready: {body['reason']}")
    return rt


def require_loaded(rt):
    """The runtime once its identity and release are loaded, else a 503: attestation and opening a
    sealed request need no link to node2."""
    if rt.state != "ready":
        raise ApiError(503, f"node1 is not ready: {rt.reason}")
    return rt


def start_run(rt, body, limits: ModelSettings) -> "Run":
    """A /generate body -> its Run, submitted. Raises BadRequest or PromptTooLong naming what is wrong,
    or ApiError 503 when node1 cannot serve now."""
    req = parse_generate(body, limits.max_new_tokens)
    r = require_ready(rt)
    return Run(r, req, r.codec.encode_chat(req.messages, limits.max_input_tokens))


class Run:
    """Iterates over (text piece, token id) and ends with `finish_reason`, usage and metrics set."""

    def __init__(self, runtime, req: GenerateRequest, prompt_ids: list[int]):
        self.req, self.prompt_ids = req, prompt_ids
        self.stream = TextStream(runtime.codec, req.stop)
        # Stop strings are matched here, so a run that has them reads each token to stop at once.
        self.each_token = req.stream or bool(req.stop)
        self.gen = Generation(prompt_ids, req.max_tokens, req.sampling.with_fixed_seed().to_dict(),
                              runtime.codec.eos_ids, chunk=1 if self.each_token else REPLY_CHUNK_TOKENS)
        self.t0 = time.perf_counter()
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.metrics = runtime.metrics
        self.finish_reason: str | None = None
        runtime.submit(self.gen)

    def __iter__(self):
        try:
            while self.finish_reason is None:
                item = self.gen.out.get(timeout=TOKEN_WAIT_S)
                if isinstance(item, GenerationFailed):
                    raise item
                if isinstance(item, Finished):
                    self.finish_reason = item.reason
                    yield self.stream.flush(), None
                    return
                self._timing(time.perf_counter())
                for token in item:
                    piece = self.stream.push(token)
                    yield piece, token
                    if self.stream.stopped:
                        self.finish_reason = "stop"
                        return
        except queue.Empty:
            raise GenerationFailed("the pipeline stopped producing tokens") from None
        finally:
            self.gen.cancel()  # a no-op when finished; frees both caches when the client went away

    def _timing(self, now: float) -> None:
        if self.t_first is None:
            self.t_first = now
            self.metrics.ttft.observe(now - self.t0)
        elif self.each_token:  # tokens handed out in chunks have no time between them to speak of
            self.metrics.itl.observe(now - self.t_last)
        self.t_last = now

    @property
    def token_ids(self) -> list[int]:
        return self.stream.ids

    def summary(self) -> dict:
        total = time.perf_counter() - self.t0
        n = len(self.stream.ids)
        decode = total - ((self.t_first or self.t0) - self.t0)
        return {
            "finish_reason": self.finish_reason,
            "usage": {"prompt_tokens": len(self.prompt_ids), "completion_tokens": n},
            "metrics": {
                "ttft_ms": round(((self.t_first or time.perf_counter()) - self.t0) * 1000, 2),
                "total_ms": round(total * 1000, 2),
                "tokens_per_sec": round((n - 1) / decode, 2) if n > 1 and decode > 0 else 0.0,
            },
        }


def complete(run: Run) -> dict:
    pieces = [piece for piece, _ in run]
    return {"text": "".join(pieces), "token_ids": run.token_ids, **run.summary()}


def event_payloads(run: Run):
    """What a stream carries, one payload per event: each token, the summary (or the error), then [DONE]."""
    try:
        for piece, token in run:
            if token is not None or piece:
                yield json.dumps({"text": piece, "token_id": token})
        yield json.dumps(run.summary())
    except GenerationFailed as exc:
        yield json.dumps({"error": str(exc)})
    yield "[DONE]"


def sse(payloads):
    """text/event-stream: one `data:` event per payload. Closing it (the client went away) closes
    the payloads too, so the generations behind them are cancelled at once."""
    try:
        for payload in payloads:
            yield f"data: {payload}\n\n"
    finally:
        close = getattr(payloads, "close", None)
        if close is not None:
            close()
