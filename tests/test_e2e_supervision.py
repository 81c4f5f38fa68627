"""`python -m launcher` (make run) supervising the real processes: a killed node2 master is restarted
and node1 serves again by itself; SIGINT stops all three (issue 13)."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests

from tests.conftest import ROOT
from tests.e2e import PORTS, stack_env, tenant_key

pytestmark = pytest.mark.slow


def wait_for(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass  # nginx is up before gunicorn's worker answers
        time.sleep(0.5)
    raise TimeoutError(url)


def gunicorn_master(launcher: subprocess.Popen, app: str) -> psutil.Process:
    return next(p for p in psutil.Process(launcher.pid).children() if any(app in part for part in p.cmdline()))


def test_a_killed_node2_is_restarted_and_node1_serves_again(release_dir, tmp_path):
    env = {**os.environ, **stack_env(release_dir), "PYTHONPATH": str(ROOT)}
    node1 = f"http://127.0.0.1:{PORTS['TWINTEE_NODE1_PORT']}"
    auth = {"Authorization": f"Bearer {tenant_key(release_dir)}"}  # in its data dir, as `make run` makes `dev`
    log = open(tmp_path / "launcher.log", "wb")
    launcher = subprocess.Popen([sys.executable, "-m", "launcher"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(node1 + "/health")
        gunicorn_master(launcher, "node2.wsgi").kill()  # SIGKILL to node2's master: its worker goes too
        time.sleep(1)
        wait_for(node1 + "/health")
        r = requests.post(node1 + "/generate", json={"prompt": "Hi", "max_tokens": 4}, headers=auth, timeout=120)
        assert r.status_code == 200 and launcher.poll() is None
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=60) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
        log.close()
    text = (tmp_path / "launcher.log").read_text()
    assert "node2 exited with code" in text and "restarting in" in text and "stopped" in text
