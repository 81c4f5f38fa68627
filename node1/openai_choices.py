"""The n choices of one OpenAI request as n Runs of the existing pipeline, sharing the prompt: collected
whole for a plain reply, or interleaved token by token into OpenAI's stream chunks."""
import json
import time
from itertools import chain

from node1 import openai_shapes as shapes
from node1.generate import Run
from node1.openai_request import OpenAIRequest
from node1.scheduler import GenerationFailed
from shared.sealed_protocol import DONE


class Choices:
    """Submits every choice at once (each a session in the running batch); all are cancelled together."""

    def __init__(self, runtime, req: OpenAIRequest, prompt_ids: list[int], model: str):
        self.req, self.prompt_ids, self.model = req, prompt_ids, model
        self.id, self.created = shapes.new_id(req.kind), int(time.time())
        self.token_text = lambda t: runtime.codec.decode([int(t)])
        self.runs: list[Run] = []
        try:
            for i in range(req.n):
                self.runs.append(Run(runtime, req.choice(i), prompt_ids))
        except Exception:
            self.cancel()  # a 503 at capacity for choice k frees choices 0..k-1 at once
            raise

    def cancel(self) -> None:
        for run in self.runs:
            run.gen.cancel()

    @property
    def want_logprobs(self) -> bool:
        return self.req.sampling.logprobs is not None

    def usage(self) -> dict:
        return shapes.usage(len(self.prompt_ids), sum(len(run.token_ids) for run in self.runs))

    def events(self):
        """(choice index, text piece, token or None) round-robin over the live choices, one token each per
        turn (each turn waits for one step's token); a choice's last event has token None and its run
        has `finish_reason` set. Cancels every choice when it ends, however it ends."""
        iters = {i: iter(run) for i, run in enumerate(self.runs)}
        try:
            while iters:
                for i, it in list(iters.items()):
                    item = next(it, None)
                    if item is None:
                        del iters[i]
                    else:
                        yield (i, *item)
        finally:
            self.cancel()

    def complete(self) -> dict:
        """The whole reply; GenerationFailed if any choice failed."""
        results = [shapes.ChoiceResult(i) for i in range(self.req.n)]
        for i, piece, token in self.events():
            results[i].text += piece
            if token is not None:
                results[i].tokens.append(token)
        for r, run in zip(results, self.runs):
            r.finish_reason = run.finish_reason
        return shapes.completion(self.req.kind, self.id, self.created, self.model, results, self.usage(),
                                 self.token_text, self.want_logprobs)

    def stream(self):
        """Primes the stream with its first event, so that a request failing before any token is a plain
        error reply (502, never a 200), then returns the iterator of event payloads (node1.generate.sse
        makes them an event stream; the sealed route seals them)."""
        events = self.events()
        first = next(events)  # GenerationFailed propagates to the route
        return ChunkWriter(self).payloads(chain([first], events))


class ChunkWriter:
    """One stream's event payloads: a role chunk first per chat choice, a chunk per piece of final text
    (carrying the logprobs of the tokens since the last one), one chunk per choice with its
    finish_reason, the usage chunk if asked, an error event if a choice fails, then [DONE]."""

    def __init__(self, choices: Choices):
        self.choices, self.req = choices, choices.req
        self.pending = {i: [] for i in range(self.req.n)}  # tokens whose logprobs ride with the next text
        self.offsets = dict.fromkeys(range(self.req.n), 0)  # legacy text_offset of each choice's next token

    def payloads(self, events):
        try:
            yield from self._chunks(events)
        except GenerationFailed as exc:  # the 200 went out already: OpenAI's error object as the last event
            yield _event(shapes.error(502, str(exc)))
        finally:
            self.choices.cancel()  # the client may have gone away mid-stream: free both nodes' caches now
        yield DONE

    def _chunks(self, events):
        seen = set()
        for i, piece, token in events:
            if i not in seen and self.req.kind == "chat":
                yield self._chunk([shapes.chunk_choice("chat", i, "", [], None, False, 0, first=True)])
            seen.add(i)
            if token is None:
                yield self._choice(i, piece, self.choices.runs[i].finish_reason)
                continue
            self.pending[i].append(token)
            if piece:
                yield self._choice(i, piece)
        if self.req.include_usage:
            c = self.choices
            yield _event({**shapes.chunk(self.req.kind, c.id, c.created, c.model, [], False), "usage": c.usage()})

    def _choice(self, i: int, text: str, finish_reason: str | None = None) -> str:
        c, tokens, self.pending[i] = self.choices, self.pending[i], []
        part = shapes.chunk_choice(self.req.kind, i, text, tokens, c.token_text, c.want_logprobs, self.offsets[i],
                                   finish_reason=finish_reason)
        if c.want_logprobs:
            self.offsets[i] += sum(len(c.token_text(t)) for t in tokens)
        return self._chunk([part])

    def _chunk(self, parts: list[dict]) -> str:
        c = self.choices
        return _event(shapes.chunk(self.req.kind, c.id, c.created, c.model, parts, self.req.include_usage))


def _event(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"))
