"""Nothing any process writes holds a prompt or a reply (issue 13 item 10): prompts carrying a random canary
go through plain /generate, a stream and the sealed path of the Python client; then neither the canary nor
the replies (as text, JSON-escaped, or as their token ids) appear in the processes' stdout and stderr, their
log files, /metrics and /health of each node and the broker, the broker's audit log, or any file under the
data directory and the run directory (the processes' working directory) or in /dev/shm."""
import json
import secrets
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from client.attest import attest, pinned_policy, require_verified
from client.sealed import open_stream, seal_request
from tests.e2e import start_stack

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 32
ATTEMPTS = 3  # canaries tried until every reply is long enough to search for
SKIP_DIRS = {".git", ".venv", "__pycache__", "node_modules"}


def prompt(canary: str, topic: str) -> str:
    return f"My name is {canary}. Please write two sentences about {topic} and greet me by my name."


def plain(url: str, auth: dict, text: str) -> tuple[str, list[int]]:
    r = requests.post(url + "/generate", json={"prompt": text, "max_tokens": MAX_TOKENS, "temperature": 0},
                      headers=auth, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["text"], r.json()["token_ids"]


def events(lines):
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def reply_of(stream) -> tuple[str, list[int]]:
    text, ids = "", []
    for event in stream:
        assert "error" not in event, event
        text += event.get("text", "")
        ids += [event["token_id"]] if event.get("token_id") is not None else []
    return text, ids


def streamed(url: str, auth: dict, text: str) -> tuple[str, list[int]]:
    body = {"prompt": text, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    with requests.post(url + "/generate", json=body, headers=auth, stream=True, timeout=300) as r:
        assert r.status_code == 200, r.text
        return reply_of(events(r.iter_lines(decode_unicode=True)))


def sealed(url: str, release_dir: Path, api_key: str, text: str) -> tuple[str, list[int]]:
    """What `python -m client chat` does: verify both nodes, seal the request (the API key inside) to
    node1's attested key."""
    with requests.Session() as http:
        key = require_verified(attest(http, url, pinned_policy(release_dir, http, url)))
        body = {"prompt": text, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True, "api_key": api_key}
        wire, response_key = seal_request(body, key)
        with http.post(url + "/v1/sealed/generate", json=wire, stream=True, timeout=300) as r:
            assert r.status_code == 200, r.text
            return reply_of(open_stream(r.iter_lines(decode_unicode=True), response_key))


def needles(canary: str, replies: list[tuple[str, list[int]]]) -> dict[str, bytes]:
    """{what it is: the bytes that must appear nowhere}."""
    out = {"canary": canary.encode()}
    for i, (text, ids) in enumerate(replies):
        out[f"reply {i} text"] = text.strip().encode()
        out[f"reply {i} text, JSON-escaped"] = json.dumps(text.strip())[1:-1].encode()
        for sep in (", ", ",", " "):
            out[f"reply {i} token ids joined by {sep!r}"] = sep.join(map(str, ids)).encode()
    return out


def written_files(logs: Path, data: Path, since: float) -> list[Path]:
    """Every log, every file of the data directory, and whatever changed since `since` in the run directory
    and in /dev/shm (gunicorn's worker files)."""
    found = [p for p in logs.rglob("*") if p.is_file()] + [p for p in data.rglob("*") if p.is_file()]
    for top in (ROOT, Path("/dev/shm")):
        for p in _walk(top):
            try:
                if p.stat().st_mtime >= since:
                    found.append(p)
            except OSError:  # gone meanwhile
                continue
    return found


def _walk(top: Path):
    if not top.is_dir():
        return
    for p in top.iterdir():
        if p.is_dir() and not p.is_symlink() and p.name not in SKIP_DIRS:
            yield from _walk(p)
        elif p.is_file():
            yield p


@pytest.fixture(scope="module")
def written(release_dir, tmp_path_factory):
    since, logs = time.time() - 1, tmp_path_factory.mktemp("canary-logs")
    s = start_stack(release_dir, logs)
    try:
        url = s.url("node1")
        found = {}
        # The canary is random, and now and then the model only echoes it back ("Canary-Ef...D04.", 32
        # characters): too short to search for. Then another canary; every one asked is searched for.
        for _ in range(ATTEMPTS):
            canary = "canary-" + secrets.token_hex(12)
            replies = [plain(url, s.auth, prompt(canary, "the sea")), streamed(url, s.auth, prompt(canary, "mountains")),
                       sealed(url, release_dir, s.api_key, prompt(canary, "a forest"))]
            found |= {f"{canary}: {what}": needle for what, needle in needles(canary, replies).items()}
            if all(long_enough(text, ids) for text, ids in replies):
                break
        pages = {f"{role}{path}": requests.get(s.url(role) + path, timeout=10).content
                 for role in ("node1", "node2", "broker") for path in ("/metrics", "/health")}
    finally:
        s.stop()  # every process flushed and closed its logs
    return SimpleNamespace(replies=replies, needles=found, pages=pages, api_key=s.api_key,
                           files=written_files(logs, release_dir, since), logs=logs, data=release_dir)


def long_enough(text: str, ids: list[int]) -> bool:
    # short replies ("Hi!") would also be found in the tokenizer's vocabulary: each must be a real sentence
    return len(text.strip()) >= 40 and len(ids) >= 10


def test_the_replies_are_long_enough_to_be_found(written):
    for text, ids in written.replies:
        assert long_enough(text, ids), text


def contents(path: Path) -> bytes:
    """A written file's bytes. SQLite's -wal and -shm sidecars of the ledger may be gone by now: the
    last connection to close checkpoints the log into the database file (searched too) and deletes them."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if path.name.endswith(("-wal", "-shm")):
            return b""
        raise


def test_what_was_searched_includes_every_log_and_the_audit_log(written):
    names = {p.name for p in written.files}
    assert {"broker.log", "node1.log", "node2.log", "broker.jsonl"} <= names
    assert any(p.stat().st_size > 0 for p in written.files if p.name == "broker.jsonl")
    assert len(written.pages) == 6


def test_no_prompt_or_reply_in_any_file_any_process_wrote(written):
    found = []
    for path in written.files:
        body = contents(path)  # once per file: the shards are hundreds of MB
        found += [(what, str(path)) for what, needle in written.needles.items() if needle in body]
    assert not found


def test_the_api_key_is_nowhere_but_its_own_file(written):
    # node1 stores only its secret's SHA-256; the tests' `<name>-api-key` file is the operator's copy
    secret = written.api_key.split("-", 2)[2].encode()  # tt-<key id>-<secret>, which may hold "-"
    found = [str(p) for p in written.files if not p.name.endswith("-api-key") and secret in contents(p)]
    found += [page for page, body in written.pages.items() if secret in body]
    assert not found


def test_no_prompt_or_reply_on_any_metrics_or_health_page(written):
    found = [(what, page) for page, body in written.pages.items() for what, needle in written.needles.items()
             if needle in body]
    assert not found
