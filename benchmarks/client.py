"""The benchmark's HTTP client of node1's public POST /generate: plain, streamed, and many at once; `auth`
is the bench tenant's Authorization header (benchmarks/stack.py: bench_auth)."""
import json
import threading
import time

import requests

TIMEOUT_S = 600


def generate(url: str, auth: dict, messages, max_tokens: int, session=None) -> dict:
    http = session or requests
    r = http.post(url + "/generate", json={"messages": messages, "max_tokens": max_tokens, "temperature": 0},
                  headers=auth, timeout=TIMEOUT_S)
    r.raise_for_status()
    return r.json()


def stream_first_token(url: str, auth: dict, messages, max_tokens: int = 1) -> dict:
    """Streams one request; -> {client_ttft_ms (to the first token event), server metrics, token_ids}."""
    t0, first, ids, summary = time.perf_counter(), None, [], {}
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    with requests.post(url + "/generate", json=body, headers=auth, stream=True, timeout=TIMEOUT_S) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"node1 failed the stream: {event['error']}")
            if event.get("token_id") is not None:
                first = first or time.perf_counter()
                ids.append(event["token_id"])
            elif "metrics" in event:
                summary = event
    return {"client_ttft_ms": ((first or time.perf_counter()) - t0) * 1e3,
            "server_ttft_ms": summary.get("metrics", {}).get("ttft_ms"), "token_ids": ids}


def wave(url: str, auth: dict, prompts: list, max_tokens: int) -> tuple[float, list[dict]]:
    """Fires one request per prompt at once from its own thread; -> (wall seconds, responses in order)."""
    results: list = [None] * len(prompts)
    gate = threading.Barrier(len(prompts) + 1)

    def client(i: int) -> None:
        with requests.Session() as http:
            gate.wait()
            try:
                results[i] = generate(url, auth, prompts[i], max_tokens, http)
            except Exception as exc:  # noqa: BLE001 - reported with the level, never lost in a thread
                results[i] = exc

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(prompts))]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(prompts)} concurrent requests failed: {failed[0]}")
    return wall, results
