"""The load test's traffic: a seeded mix of plain, streamed and dropped POST /generate requests from many
clients at once, and the check of every completed reply against its own single-request greedy output.
`auth` is one tenant's Authorization header, sent by every client's session."""
import json
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from benchmarks.prompts import TOPICS

# Distinct lengths on purpose: sequences of different lengths share each batched step.
PROMPTS = [f"Write a long, detailed story about {topic}." if i % 2 else f"Tell me a story about {topic}."
           for i, topic in enumerate(TOPICS[:6])]
REQUEST_TIMEOUT_S = 300  # one request; the whole run is bounded by its own deadline as well
RETRY_AFTER_CAP_S = 5.0
# node1 answers Retry-After: 2 and gunicorn closes an idle keep-alive connection after 2 s: a client
# back exactly on time can send into the closing socket (measured: one ConnectionResetError in 300)
KEEPALIVE_MARGIN_S = 0.25


@dataclass(frozen=True)
class Job:
    prompt: int  # index into PROMPTS
    max_tokens: int
    mode: str  # "plain" (JSON reply), "stream" (SSE to the end) or "drop" (SSE, closed after drop_after tokens)
    drop_after: int = 0

    @property
    def body(self) -> dict:
        return {"prompt": PROMPTS[self.prompt], "max_tokens": self.max_tokens, "temperature": 0,
                "stream": self.mode != "plain"}


@dataclass
class Outcome:
    job: Job
    status: int | None = None  # None: no HTTP answer at all (connection refused or reset)
    token_ids: list[int] | None = None  # set only for a reply received whole
    error: str | None = None  # an error event in a 200 stream, a non-200 body, or the exception
    tokens_seen: int = 0
    seconds: float = 0.0
    after: str | None = None  # the same client's previous request, "mode/status": a 503 right after a drop says why
    retry_after: float = 0.0  # what a 503 asked the client to wait


def plan(n: int, max_tokens: tuple[int, ...], drop_share: float, stream_share: float, seed: int,
         prompts: int = len(PROMPTS)) -> list[Job]:
    """n jobs, the same for the same seed: random prompt and budget, dropped streams cut after 2-6 tokens."""
    rng = random.Random(seed)
    jobs = []
    for _ in range(n):
        p, m, x = rng.randrange(prompts), rng.choice(max_tokens), rng.random()
        mode = "drop" if x < drop_share else "stream" if x < drop_share + stream_share else "plain"
        jobs.append(Job(p, m, mode, rng.randint(2, 6) if mode == "drop" else 0))
    return jobs


def run_one(http: requests.Session, url: str, job: Job) -> Outcome:
    out, t0 = Outcome(job), time.perf_counter()
    try:
        with http.post(url + "/generate", json=job.body, stream=job.mode != "plain", timeout=REQUEST_TIMEOUT_S) as r:
            out.status = r.status_code
            if r.status_code == 503:
                out.retry_after = float(r.headers.get("Retry-After") or 0)
            if r.status_code != 200:
                out.error = r.text[:200]
            elif job.mode == "plain":
                out.token_ids = r.json()["token_ids"]
                out.tokens_seen = len(out.token_ids)
            else:
                _read_stream(r, job, out)
    except requests.RequestException as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:200]
    out.seconds = time.perf_counter() - t0
    return out


def _read_stream(r: requests.Response, job: Job, out: Outcome) -> None:
    ids = []
    for line in r.iter_lines():
        if not line.startswith(b"data: "):
            continue
        if line == b"data: [DONE]":
            out.token_ids = ids if out.error is None else None
            return
        event = json.loads(line[6:])
        if "error" in event:
            out.error = event["error"]
        elif event.get("token_id") is not None:
            ids.append(event["token_id"])
            out.tokens_seen = len(ids)
            if job.mode == "drop" and len(ids) >= job.drop_after:
                return  # leaving the `with` closes the connection mid-stream, as a client going away does
    out.error = out.error or "the stream ended without [DONE]"


def run_mix(url: str, auth: dict, jobs: list[Job], clients: int, deadline_s: float) -> tuple[float, list[Outcome]]:
    """`clients` threads, each with its own connection, take jobs until none are left or the deadline
    passes (jobs not started by then are left out); a refused job is counted, not retried, and its
    client waits the Retry-After it was given -> (wall seconds, outcomes in completion order)."""
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    outcomes, lock, gate = [], threading.Lock(), threading.Barrier(clients + 1)
    stop_at = time.monotonic() + deadline_s

    def client() -> None:
        previous = None
        with requests.Session() as http:
            http.headers.update(auth)
            gate.wait()
            while time.monotonic() < stop_at:
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                result = run_one(http, url, job)
                result.after, previous = previous, f"{job.mode}/{result.status}"
                with lock:
                    outcomes.append(result)
                # a refused client waits as told, as a well-behaved one does, instead of spending the
                # rest of the plan on instant 503s in a second
                wait = min(result.retry_after, RETRY_AFTER_CAP_S)
                time.sleep(min(wait + KEEPALIVE_MARGIN_S if wait else 0.0, max(0.0, stop_at - time.monotonic())))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=max(1.0, stop_at - time.monotonic() + REQUEST_TIMEOUT_S))
    return time.perf_counter() - t0, list(outcomes)


def references(url: str, auth: dict, jobs: list[Job]) -> dict[tuple[int, int], list[int]]:
    """Each distinct (prompt, max_tokens) of the plan alone on the stack, one at a time: greedy, plain."""
    refs = {}
    with requests.Session() as http:
        http.headers.update(auth)
        for key in sorted({(j.prompt, j.max_tokens) for j in jobs}):
            out = run_one(http, url, Job(key[0], key[1], "plain"))
            if out.token_ids is None:
                raise RuntimeError(f"reference request {key} failed: {out.status} {out.error}")
            refs[key] = out.token_ids
    return refs


@dataclass
class Verdict:
    """What a mix's outcomes say: counts by mode and status, and every departure from the reference."""
    requests: int = 0
    by_mode: dict = field(default_factory=dict)
    statuses: dict = field(default_factory=dict)
    server_errors: int = 0  # 5xx
    failures: list = field(default_factory=list)  # completed or plain requests that did not complete
    mismatches: list = field(default_factory=list)  # completed, with token ids unlike the reference
    completed: int = 0
    dropped: int = 0
    tokens: int = 0  # tokens received by clients (dropped streams' few tokens included)
    refused_after: dict = field(default_factory=dict)  # 503s by what the same client did just before

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items()}


def judge(outcomes: list[Outcome], refs: dict) -> Verdict:
    v = Verdict(requests=len(outcomes))
    v.by_mode = dict(Counter(o.job.mode for o in outcomes))
    v.statuses = {str(k): n for k, n in Counter(o.status for o in outcomes).items()}
    v.refused_after = dict(Counter(str(o.after) for o in outcomes if o.status == 503))
    for o in outcomes:
        v.tokens += o.tokens_seen
        v.server_errors += o.status is not None and o.status >= 500
        if o.job.mode == "drop" and o.status == 200 and o.error is None:
            v.dropped += 1
        elif o.token_ids is None:
            v.failures.append(_describe(o))
        elif o.token_ids != refs[(o.job.prompt, o.job.max_tokens)]:
            v.mismatches.append({**_describe(o), "got": o.token_ids,
                                 "want": refs[(o.job.prompt, o.job.max_tokens)]})
        else:
            v.completed += 1
    return v


def _describe(o: Outcome) -> dict:
    return {"prompt": o.job.prompt, "max_tokens": o.job.max_tokens, "mode": o.job.mode, "status": o.status,
            "error": o.error, "tokens_seen": o.tokens_seen, "after": o.after}
