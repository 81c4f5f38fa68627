"""Graceful shutdown (issue 13 item 8): SIGTERM to the launcher, or Ctrl-C to its whole process group as a
terminal sends it, lets a stream in flight finish, closes its session on node2, kills nothing (no
gunicorn "was sent SIGKILL") and leaves no process behind, nginx included; a generation that outlives
the deadline ends with a clean error event and is closed on node2 all the same."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import requests

from tests.conftest import ROOT
from tests.e2e import own_ports, start_stack, stack_env, tenant_key

pytestmark = pytest.mark.slow
PORTS = own_ports(50)
NODE1 = f"http://127.0.0.1:{PORTS['TWINTEE_NODE1_PORT']}"
SHORT = {"prompt": "List the planets of the solar system, one per line.", "max_tokens": 24}
LONG = {"prompt": "Write a long story about a lighthouse keeper.", "max_tokens": 400}


def wait_healthy(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass  # nginx is up before gunicorn's worker answers
        time.sleep(0.5)
    raise TimeoutError(url)


class Stream:
    """A streaming generation read on its own thread: its events, and when the first token came."""

    def __init__(self, url: str, auth: dict, body: dict):
        self.events, self.first = [], threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url, auth, body))
        self.thread.start()

    def _read(self, url, auth, body):
        with requests.post(url + "/generate", json={**body, "stream": True}, headers=auth, stream=True,
                           timeout=300) as r:
            for line in r.iter_lines():
                if line.startswith(b"data: "):
                    data = line[6:].decode()
                    self.events.append(data if data == "[DONE]" else json.loads(data))
                    self.first.set()

    @property
    def token_ids(self) -> list[int]:
        return [e["token_id"] for e in self.events if isinstance(e, dict) and e.get("token_id") is not None]


@pytest.mark.parametrize("how", ["SIGTERM to the launcher", "Ctrl-C to its process group"])
def test_the_launcher_stops_gracefully_with_a_stream_in_flight(release_dir, tmp_path, how):
    env = {**os.environ, **stack_env(release_dir, **PORTS), "PYTHONPATH": str(ROOT)}
    auth = {"Authorization": f"Bearer {tenant_key(release_dir)}"}  # in its data dir, as `make run` makes `dev`
    log_path = tmp_path / "launcher.log"
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen([sys.executable, "-m", "launcher"], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(NODE1)
        reference = requests.post(NODE1 + "/generate", json=SHORT, headers=auth, timeout=120).json()["token_ids"]
        everything = psutil.Process(launcher.pid).children(recursive=True)
        assert sum("nginx" in p.name() for p in everything) >= 6  # a master and a worker per role
        stream = Stream(NODE1, auth, SHORT)
        assert stream.first.wait(120)
        if how.startswith("Ctrl-C"):
            os.killpg(launcher.pid, signal.SIGINT)  # what a terminal does: every process in the group
        else:
            launcher.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert launcher.wait(timeout=120) == 0
        print(f"{how}: the launcher exited in {time.monotonic() - t0:.1f} s")
        stream.thread.join(timeout=10)
    finally:
        if launcher.poll() is None:
            launcher.kill()  # its children get SIGTERM with it (launcher/stack.py: _stop_with_parent)
    assert stream.token_ids == reference and stream.events[-1] == "[DONE]"
    assert stream.events[-2]["finish_reason"] in ("stop", "length")
    text = log_path.read_text()
    assert "SIGKILL" not in text and "killing" not in text and text.rstrip().endswith("stopped")
    assert not [p for p in everything if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_generation_past_the_deadline_ends_cleanly_and_is_closed_on_node2(release_dir, tmp_path):
    stack = start_stack(release_dir, tmp_path, TWINTEE_SHUTDOWN_DEADLINE_S="2")
    try:
        stream = Stream(stack.url("node1"), stack.auth, LONG)
        assert stream.first.wait(120)
        assert requests.get(stack.url("node2") + "/health", timeout=10).json()["sessions"] == 1
        t0 = time.monotonic()
        stack.stop("node1")
        stopped = time.monotonic() - t0
        stream.thread.join(timeout=10)
        sessions = requests.get(stack.url("node2") + "/health", timeout=10).json()["sessions"]
    finally:
        stack.stop()
    print(f"node1 stopped {stopped:.1f} s after SIGTERM (deadline 2 s), its stream at {len(stream.token_ids)} tokens")
    assert stream.events[-2:] == [{"error": "node1 is shutting down"}, "[DONE]"]
    assert sessions == 0  # node1 closed it on its way out, not node2's idle timeout
    assert stopped < 2 + 15  # the deadline, plus a margin for one step and the close frame
    assert "SIGKILL" not in (tmp_path / "node1.log").read_text()
