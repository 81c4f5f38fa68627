"""Tenants through the real processes: 401 and 429 through the official openai client, 50 concurrent
requests from 5 tenants billed exactly (SQLite and PostgreSQL), node1 killed -9 under load loses no
answered request, and `make ledger-verify` appraises the real signing keys and names an edited row."""
import os
import signal
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import openai
import psutil
import pytest
import requests

from node1.store import Store
from node1.tenants import Policy, Tenants
from tests.e2e import PORT_BASE, own_ports, start_stack
from tests.pg import pg_bin, postgres_server

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASK = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}


def new_tenant(data_dir, ledger_url="", **policy) -> tuple[str, str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    return name, Tenants(Store.open(ledger_url, data_dir)).create(name, Policy(**policy))


def client(stack, key, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url("node1") + "/v1", api_key=key, max_retries=retries, timeout=300)


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("tenant-logs"), **own_ports(41))
    yield s
    s.stop()


def model_of(stack) -> str:
    return client(stack, stack.api_key).models.list().data[0].id


def test_the_official_client_gets_401_without_a_right_key_and_429_over_its_quota(stack, release_dir):
    model = model_of(stack)
    for key in ("tt-0000000000000000-wrong", "sk-not-ours"):
        with pytest.raises(openai.AuthenticationError) as err:
            client(stack, key).chat.completions.create(model=model, **ASK)
        assert err.value.code == "invalid_api_key"
    name, key = new_tenant(release_dir, rpm=2)
    limited = client(stack, key)
    limited.chat.completions.create(model=model, **ASK)
    limited.models.list()
    with pytest.raises(openai.RateLimitError) as err:
        limited.chat.completions.create(model=model, **ASK)
    assert 0 < int(err.value.response.headers["Retry-After"]) <= 60
    Tenants(Store.open("", release_dir)).revoke(name)
    r = requests.get(stack.url("node1") + "/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    for path in ("/health", "/policy", "/openapi.json", "/"):
        assert requests.get(stack.url("node1") + path, timeout=30).status_code == 200


def billed_exactly(stack, data_dir, ledger_url=""):
    """50 concurrent requests from 5 tenants: each tenant's /v1/usage is the sum of its replies' usage."""
    model = model_of(stack)
    tenants = [new_tenant(data_dir, ledger_url) for _ in range(5)]
    sums = {name: [0, 0] for name, _ in tenants}
    lock = threading.Lock()

    def one(i):
        name, key = tenants[i % 5]
        stream = i % 3 == 0
        c = client(stack, key, retries=20)  # past node1's 32 at once: a 503 with Retry-After, never billed
        if stream:
            chunks = list(c.chat.completions.create(model=model, stream=True, stream_options={"include_usage": True},
                                                    **{**ASK, "max_tokens": 2 + i % 4}))
            usage = chunks[-1].usage
        else:
            usage = c.completions.create(model=model, prompt=f"Count to {i}:", max_tokens=2 + i % 4).usage
        with lock:
            sums[name][0] += usage.prompt_tokens
            sums[name][1] += usage.completion_tokens

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(one, range(50)))
    for name, key in tenants:
        days = requests.get(stack.url("node1") + "/v1/usage", headers={"Authorization": f"Bearer {key}"},
                            timeout=30).json()["data"]
        assert sum(d["requests"] for d in days) == 10
        assert [sum(d["prompt_tokens"] for d in days), sum(d["completion_tokens"] for d in days)] == sums[name]


def test_50_concurrent_requests_from_5_tenants_are_billed_exactly(stack, release_dir):
    billed_exactly(stack, release_dir)


@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL's initdb/pg_ctl are not installed "
                                             "(make setup installs Debian's postgresql)")
def test_the_same_on_postgresql(stack, release_dir, tmp_path_factory):
    stack.stop()  # one stack at a time on this machine
    with postgres_server(PORT_BASE + 61) as url:
        pg = start_stack(release_dir, tmp_path_factory.mktemp("pg-logs"), TWINTEE_LEDGER_URL=url, **own_ports(41))
        try:
            billed_exactly(pg, release_dir, url)
        finally:
            pg.stop()
    stack.__dict__.update(start_stack(release_dir, tmp_path_factory.mktemp("tenant-logs"), **own_ports(41)).__dict__)


def kill_node1(stack) -> None:
    master = psutil.Process(stack.procs["node1"].pid)
    for p in [*master.children(recursive=True), master]:
        p.send_signal(signal.SIGKILL)
    stack.procs["node1"].wait(timeout=30)


def test_node1_killed_under_load_keeps_every_answered_request(stack, release_dir):
    model = model_of(stack)
    name, key = new_tenant(release_dir)
    answered, lock, stop = [], threading.Lock(), threading.Event()

    def load():
        c = client(stack, key)
        while not stop.is_set():
            try:
                r = c.completions.create(model=model, prompt="Hello", max_tokens=3)
            except (openai.APIConnectionError, openai.APIStatusError):
                continue
            with lock:
                answered.append(r.usage.total_tokens)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        while len(answered) < 12:
            threads[0].join(0.2)
        kill_node1(stack)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    stack.start("node1")
    stack.wait_healthy("node1")
    days = requests.get(stack.url("node1") + "/v1/usage", headers={"Authorization": f"Bearer {key}"},
                        timeout=30).json()["data"]
    # A row may be committed for a reply the kill cut off; an answered one is never missing.
    assert sum(d["requests"] for d in days) >= len(answered) >= 12
    assert sum(d["total_tokens"] for d in days) >= sum(answered)


def ledger_verify(release_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "TWINTEE_DATA_DIR": str(release_dir), "PYTHONPATH": ROOT}
    env.pop("TWINTEE_LEDGER_URL", None)
    return subprocess.run([sys.executable, "-m", "node1.ledger_verify"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_ledger_verify_appraises_the_real_keys_and_names_an_edited_row(stack, release_dir):
    client(stack, stack.api_key).completions.create(model=model_of(stack), prompt="Hi", max_tokens=2)
    ok = ledger_verify(release_dir)
    assert ok.returncode == 0 and "every row signed by an attested node1 key" in ok.stdout, ok.stdout + ok.stderr
    store = Store.open("", release_dir)
    seq = store.rows("SELECT MAX(seq) FROM ledger")[0][0]
    store.rows("UPDATE ledger SET completion_tokens = completion_tokens + 1 WHERE seq = ?", (seq,))
    try:
        bad = ledger_verify(release_dir)
        assert bad.returncode == 1 and f"row {seq}: edited" in bad.stdout, bad.stdout + bad.stderr
    finally:
        store.rows("UPDATE ledger SET completion_tokens = completion_tokens - 1 WHERE seq = ?", (seq,))
