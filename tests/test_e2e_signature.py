"""Verifiable responses against the real processes: the official `openai` client's exact bytes (captured
by a recording httpx transport), then `python -m client verify-signature` as a user runs it: exit 0 for
the genuine files, exit 1 naming the file after one byte of either is changed. Plain and streamed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import requests

from tests.e2e import start_stack

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class RecordingTransport(httpx.BaseTransport):
    """Every exchange's exact bytes: the request body sent and the response body as received."""

    def __init__(self):
        self.inner, self.exchanges = httpx.HTTPTransport(), []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        received = bytearray()
        self.exchanges.append((request.read(), received))
        resp = self.inner.handle_request(request)
        return httpx.Response(resp.status_code, headers=resp.headers, stream=Recorded(resp.stream, received),
                              extensions=resp.extensions)


class Recorded(httpx.SyncByteStream):
    def __init__(self, inner, into: bytearray):
        self.inner, self.into = inner, into

    def __iter__(self):
        for chunk in self.inner:
            self.into += chunk
            yield chunk

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("logs"), TWINTEE_MAX_NEW_TOKENS="32")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def recorder():
    return RecordingTransport()


@pytest.fixture(scope="module")
def client(stack, recorder):
    return openai.OpenAI(base_url=stack.url("node1") + "/v1", api_key=stack.api_key, max_retries=0, timeout=300,
                         http_client=httpx.Client(transport=recorder))


def verify_cli(url: str, release_dir: Path, rid: str, request: Path, response: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "client", "verify-signature", "--url", url, "--id", rid, "--request", str(request),
           "--response", str(response), "--release-dir", str(release_dir)]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)


def flip_one_byte(path: Path) -> bytes:
    """Changes one byte in the middle of the file; returns the original bytes."""
    original = path.read_bytes()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    path.write_bytes(bytes(changed))
    return original


def check_files(stack, release_dir, tmp_path, rid: str, request_bytes: bytes, response_bytes: bytes):
    """verify-signature passes on the genuine files and fails naming the file after one changed byte."""
    req, resp = tmp_path / "request.json", tmp_path / "response.bin"
    req.write_bytes(request_bytes)
    resp.write_bytes(response_bytes)
    url = stack.url("node1")
    ok = verify_cli(url, release_dir, rid, req, resp)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VERIFIED: the attested node1 signed exactly this response" in ok.stdout
    for path, name in ((resp, "response hash"), (req, "request hash")):
        original = flip_one_byte(path)
        bad = verify_cli(url, release_dir, rid, req, resp)
        assert bad.returncode == 1 and f"NOT VERIFIED: {name}:" in bad.stdout, bad.stdout + bad.stderr
        path.write_bytes(original)
    return ok.stdout


def test_a_plain_chat_completion_verifies_and_a_changed_byte_does_not(stack, client, recorder, release_dir,
                                                                       tmp_path):
    reply = client.chat.completions.create(model="HuggingFaceTB/SmolLM2-135M-Instruct", messages=MESSAGES,
                                           max_tokens=16, temperature=0)
    sent, received = recorder.exchanges[-1]
    assert json.loads(received)["id"] == reply.id and reply.choices[0].message.content
    out = check_files(stack, release_dir, tmp_path, reply.id, sent, bytes(received))
    assert "[ok  ] key binding" in out and "node2 (for information): VERIFIED" in out


def test_a_streamed_chat_completion_verifies_over_its_sse_bytes(stack, client, recorder, release_dir, tmp_path):
    chunks = list(client.chat.completions.create(model="HuggingFaceTB/SmolLM2-135M-Instruct", messages=MESSAGES,
                                                 max_tokens=16, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    sent, received = recorder.exchanges[-1]
    assert bytes(received).startswith(b"data: ") and bytes(received).endswith(b"data: [DONE]\n\n")
    check_files(stack, release_dir, tmp_path, chunks[0].id, sent, bytes(received))


def test_the_report_and_unknown_ids_over_http(stack):
    url = stack.url("node1")
    r = requests.get(f"{url}/v1/signature/chatcmpl-nope", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    report = requests.get(f"{url}/v1/attestation/report", params={"nonce": "ab" * 32}, timeout=30).json()
    assert report["request_nonce"] == "ab" * 32 and report["signing_algo"] == "ed25519"
    assert report["signing"]["public_key"] == report["signing_key"] != report["node1"]["public_key"]
    assert "evidence" in report["node2"]
