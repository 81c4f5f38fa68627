"""TwinTEE's processes on one machine: each role's gunicorn on a unix socket in a private runtime
directory, behind the role's nginx on the role's public port; `Stack` starts, waits for and stops them
(for `make run`, the end-to-end tests and the benchmark)."""
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from launcher import proxy
from shared.config import GUNICORN_THREADS, env_float
from shared.cpu import OPENMP_ENV, library_caps

ROOT = Path(__file__).resolve().parents[1]
APPS = {"node1": "node1.wsgi:app_from_env()", "node2": "node2.wsgi:app_from_env()",
        "broker": "broker.wsgi:app_from_env()"}
PORT_VARS = {"node1": ("TWINTEE_NODE1_HOST", "TWINTEE_NODE1_PORT", 5002),
             "node2": ("TWINTEE_NODE2_HOST", "TWINTEE_NODE2_PORT", 5001),
             "broker": ("TWINTEE_BROKER_HOST", "TWINTEE_BROKER_PORT", 5003)}
# node1 first, so its generations finish (or end cleanly) and close their sessions while node2 is up.
STOP_ORDER = ("node1", "node2", "broker")
SHUTDOWN_DEADLINE_S = 20.0  # TWINTEE_SHUTDOWN_DEADLINE_S: how long generations in flight may go on
# gunicorn and nginx each get this much past the deadline, so neither cuts what node1 is still ending.
GRACE_MARGIN_S = 10.0


def shutdown_deadline(env: dict) -> float:
    return env_float(env, "TWINTEE_SHUTDOWN_DEADLINE_S", SHUTDOWN_DEADLINE_S)


def broker_env(env: dict) -> dict:
    """The broker's settings, defaulting to the release directory's files."""
    data = Path(env.get("TWINTEE_DATA_DIR", "data")).resolve()
    defaults = {
        "TWINTEE_BROKER_DATA_DIR": str(data),
        "TWINTEE_BROKER_AUDIT_LOG": str(data / "audit" / "broker.jsonl"),
        "TWINTEE_BROKER_RELEASE_PUBLIC_KEY": str(data / "keys" / "owner.pub"),
        "TWINTEE_BROKER_POLICY": str(data / "policy.json"),
        "TWINTEE_BROKER_PORT": "5003",
    }
    if not env.get("TWINTEE_BROKER_MASTER_KEY"):
        defaults["TWINTEE_BROKER_MASTER_KEY_FILE"] = str(data / "keys" / "master.key")
    return {**defaults, **env}


def address(role: str, env: dict) -> tuple[str, int]:
    """The role's public host and port: nginx's, behind which gunicorn listens on a unix socket."""
    host_var, port_var, port = PORT_VARS[role]
    return env.get(host_var, "127.0.0.1"), int(env.get(port_var, port))


def gunicorn_command(role: str, env: dict, bind: str | None = None) -> list[str]:
    """The exact command that serves one role (the Dockerfiles run the same); bind defaults to its port."""
    bind = bind or "%s:%d" % address(role, env)
    # One worker: sessions and KV caches live in this process's memory. Threads serve concurrent clients.
    # The worker's heartbeat fchmods a file on every event-loop turn (py-spy: ~1% of node2's time at
    # one stream); gunicorn's FAQ puts it in memory (/dev/shm) so a disk-backed /tmp cannot stall it.
    tmp = ["--worker-tmp-dir", "/dev/shm"] if os.path.isdir("/dev/shm") else []
    graceful = shutdown_deadline(env) + GRACE_MARGIN_S
    # keep-alive outlasts nginx's upstream keepalive_timeout (60 s): nginx, not gunicorn, closes an idle
    # connection, so nginx never sends a request down one that gunicorn is closing.
    return [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread", "--threads", str(GUNICORN_THREADS),
            "--bind", bind, "--timeout", "120", "--graceful-timeout", f"{graceful:g}", "--keep-alive", "75",
            "--no-control-socket", *tmp, APPS[role]]


class Stack:
    def __init__(self, env: dict | None = None, log_dir: Path | None = None, root: Path = ROOT):
        self.root = root  # a checkout to run from (tests run a modified copy to see it refused)
        # Both nodes share this machine: give each half the cores unless told otherwise (measured
        # here: 23 tokens/s single-stream at 1 thread each, 20 at torch's default of 2 each).
        shared_cores = {"TWINTEE_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
        env = {**shared_cores, **OPENMP_ENV, **os.environ, **(env or {}), "PYTHONPATH": str(root)}
        # TWINTEE_CPU_ISA=avx2 runs every process as on an AVX2-only CPU, math libraries included.
        self.env = broker_env({**env, **library_caps(env.get("TWINTEE_CPU_ISA", "native"))})
        self.log_dir = log_dir
        self.deadline_s = shutdown_deadline(self.env)
        self.procs: dict[str, subprocess.Popen] = {}    # role -> its gunicorn master
        self.proxies: dict[str, subprocess.Popen] = {}  # role -> its nginx master
        self._run_dir: Path | None = None

    @property
    def run_dir(self) -> Path:
        """Private (0700) home of the gunicorn sockets and nginx's state: only this user reaches gunicorn."""
        if self._run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix="twintee-", dir=self.env.get("XDG_RUNTIME_DIR")))
        return self._run_dir

    def url(self, role: str) -> str:
        return "http://%s:%d" % address(role, self.env)

    def socket(self, role: str) -> Path:
        """gunicorn's unix socket for the role (tests reach it directly to compare with nginx)."""
        return proxy.socket_path(self.run_dir, role)

    def start(self, role: str) -> subprocess.Popen:
        """Starts whichever of the role's gunicorn and nginx is not running; -> the gunicorn master."""
        if not _running(self.procs.get(role)):
            self.procs[role] = self._spawn(role, gunicorn_command(role, self.env, bind=f"unix:{self.socket(role)}"))
        if not _running(self.proxies.get(role)):
            self._wait_for_socket(role)
            host, port = address(role, self.env)
            command = proxy.prepare(role, self.run_dir, host, port, self.env, self.deadline_s + GRACE_MARGIN_S)
            self.proxies[role] = self._spawn(role, command)
        return self.procs[role]

    def _wait_for_socket(self, role: str, timeout: float = 10.0) -> None:
        """Until gunicorn's master has bound its socket (about a second), so nginx's first answers are
        the app's, not 502s; the app itself still loads in the worker after that."""
        deadline = time.monotonic() + timeout
        while not self.socket(role).exists() and _running(self.procs[role]) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _spawn(self, role: str, command: list[str]) -> subprocess.Popen:
        out = open(self.log_dir / f"{role}.log", "ab") if self.log_dir else None
        # Its own session: a Ctrl-C in the terminal reaches the launcher alone, which stops the
        # processes in order; before, every gunicorn got it at once and quit mid-generation.
        return subprocess.Popen(command, cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True, preexec_fn=_stop_with_parent)

    def exited(self, role: str) -> tuple[str, int] | None:
        """(which process, its exit code) if the role's gunicorn or nginx has exited, else None."""
        for what, proc in ((role, self.procs.get(role)), (f"{role}'s nginx", self.proxies.get(role))):
            if proc is not None and proc.poll() is not None:
                return what, proc.returncode
        return None

    def wait_healthy(self, role: str, timeout: float = 180.0) -> dict:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if dead := self.exited(role):
                raise RuntimeError(f"{dead[0]} exited with code {dead[1]}")
            try:
                r = requests.get(self.url(role) + "/health", timeout=5)
                last = r.json()
                if r.status_code == 200:
                    return last
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{role} not healthy after {timeout:.0f}s: {last}")

    def stop(self, role: str | None = None) -> None:
        """Stops one role, or all in STOP_ORDER. Each stops accepting at once and finishes its requests
        in flight within the shutdown deadline; a process is killed only if it outlives deadline and margin."""
        roles = [role] if role else [r for r in STOP_ORDER if r in self.procs or r in self.proxies]
        for name in roles:
            self._stop_role(name)
        if role is None and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def _stop_role(self, role: str) -> None:
        server, front = self.procs.pop(role, None), self.proxies.pop(role, None)
        # SIGQUIT: nginx closes its port at once and lets the responses it is relaying finish.
        # SIGTERM: gunicorn's graceful stop (node1 ends what outlives the deadline itself, node1/wsgi.py).
        for proc, sig in ((front, signal.SIGQUIT), (server, signal.SIGTERM)):
            if _running(proc):
                proc.send_signal(sig)
        for proc, what in ((server, role), (front, f"{role}'s nginx")):
            _wait_or_kill(proc, what, self.deadline_s + 2 * GRACE_MARGIN_S)


PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it dies, even by SIGKILL. Its own
    session no longer shares the launcher's fate otherwise, and would keep the ports. (The Stack starts
    processes from the main thread: a thread that exits would take its children with it.)"""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _running(proc: subprocess.Popen | None) -> bool:
    return proc is not None and proc.poll() is None


def _wait_or_kill(proc: subprocess.Popen | None, what: str, timeout: float) -> None:
    if proc is None:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{what} did not stop within {timeout:.0f} s; killing its process group", flush=True)
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the master and its workers
        proc.wait()
