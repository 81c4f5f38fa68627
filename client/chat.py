"""One conversation with node1: history kept here, each turn sealed to node1's attested key (or plain, if told)."""
import requests

from attestation.canonical import json_object
from client.sealed import open_stream, seal_request, sse_data


class ChatError(Exception):
    """node1 refused a turn or the stream failed; the message is safe to print."""


class Chat:
    def __init__(self, http: requests.Session, url: str, *, temperature: float, max_tokens: int,
                 api_key: str | None = None):
        self.http, self.url, self.api_key = http, url.rstrip("/"), api_key
        self.settings = {"temperature": temperature, "max_tokens": max_tokens}
        self.messages: list[dict] = []

    def turn(self, prompt: str, node1_key: bytes | None, on_text) -> dict:
        """Sends the conversation plus `prompt`; calls on_text(piece) as it streams; returns the summary.

        node1_key None means plain /generate: the host can read it all (only with --insecure-plain).
        """
        body = {"messages": [*self.messages, {"role": "user", "content": prompt}], **self.settings, "stream": True}
        events = self._sealed(body, node1_key) if node1_key else self._plain(body)
        pieces, summary = [], {}
        for event in events:
            if "error" in event:
                raise ChatError(f"generation failed: {event['error']}")
            if "text" in event:
                pieces.append(event["text"])
                on_text(event["text"])
            else:
                summary = event
        self.messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": "".join(pieces)}]
        return summary

    def _sealed(self, body: dict, node1_key: bytes):
        wire, key = seal_request({**body, "api_key": self.api_key} if self.api_key else body, node1_key)
        r = self._post("/v1/sealed/generate", wire)
        yield from open_stream(r.iter_lines(decode_unicode=True), key)

    def _plain(self, body: dict):
        r = self._post("/generate", body)
        for data in sse_data(r.iter_lines(decode_unicode=True)):
            if data == "[DONE]":
                return
            event = json_object(data)
            if event is None:
                raise ChatError("node1 sent an event that is not a JSON object")
            yield event

    def _post(self, path: str, body: dict) -> requests.Response:
        try:
            plain_key = {"Authorization": f"Bearer {self.api_key}"} if self.api_key and path == "/generate" else {}
            r = self.http.post(f"{self.url}{path}", json=body, headers=plain_key, stream=True, timeout=300)
        except requests.RequestException as exc:
            raise ChatError(f"node1 unreachable: {type(exc).__name__}") from None
        if r.status_code != 200:
            reason = (json_object(r.content) or {}).get("error", r.status_code)
            reason = reason.get("message", reason) if isinstance(reason, dict) else reason  # OpenAI's shape
            raise ChatError(f"node1 refused the request ({r.status_code}): {reason}")
        return r
