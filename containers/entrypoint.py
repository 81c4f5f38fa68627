"""A role's container: renders the role's nginx configuration from attestation/proxy.py as the launcher
does, runs gunicorn on a unix socket in a private directory and nginx on the role's port, and stops
them in the launcher's order when the container is stopped.

It lives outside /app on purpose: /app holds exactly the files of the role's measurement, and this
script, like the rest of the image, is covered by the image digest a TEE deployment pins. It imports
only attestation/ (in every role's image) and the standard library, so the broker's image runs it too.
"""
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attestation.proxy import render

# The same values as launcher/stack.py and launcher/proxy.py (tests/test_containers.py compares them).
PORTS = {"node1": ("TWINTEE_NODE1_PORT", 5002), "node2": ("TWINTEE_NODE2_PORT", 5001),
         "broker": ("TWINTEE_BROKER_PORT", 5003)}
APPS = {"node1": "node1.wsgi:app_from_env()", "node2": "node2.wsgi:app_from_env()",
        "broker": "broker.wsgi:app_from_env()"}
GUNICORN_THREADS = 48
SHUTDOWN_DEADLINE_S = 20.0
GRACE_MARGIN_S = 10.0
NODE2_MAX_FRAME_BYTES = 64 << 20
# shared/cpu.py's OPENMP_ENV: idle OpenMP threads sleep after a short spin, not through the other node's turn.
OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "4000"}


def max_body_bytes(role: str, env: dict) -> int:
    if role == "node1":
        return int(env.get("TWINTEE_MAX_BODY_BYTES") or 1 << 20)
    if role == "node2":
        return NODE2_MAX_FRAME_BYTES
    return int(env.get("TWINTEE_BROKER_MAX_REQUEST_BYTES") or 1 << 20)


def port(role: str, env: dict) -> int:
    var, default = PORTS[role]
    return int(env.get(var) or default)


def deadline(env: dict) -> float:
    return float(env.get("TWINTEE_SHUTDOWN_DEADLINE_S") or SHUTDOWN_DEADLINE_S)


def gunicorn_command(role: str, env: dict, socket: Path) -> list[str]:
    """launcher.stack.gunicorn_command's command, bound to the private socket."""
    return [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread",
            "--threads", str(GUNICORN_THREADS), "--bind", f"unix:{socket}", "--timeout", "120",
            "--graceful-timeout", f"{deadline(env) + GRACE_MARGIN_S:g}", "--keep-alive", "75",
            "--no-control-socket", "--worker-tmp-dir", "/dev/shm", APPS[role]]


def nginx_command(role: str, env: dict, run_dir: Path, socket: Path) -> list[str]:
    """Writes the role's nginx.conf (launcher/proxy.py's layout) and -> the command that runs it."""
    prefix = run_dir / f"{role}-nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
    conf = prefix / "nginx.conf"
    # 0.0.0.0: the container's own network namespace; the compose file decides what reaches it.
    conf.write_text(render(role, host="0.0.0.0", port=port(role, env), socket=str(socket), prefix=str(prefix),
                           max_body=max_body_bytes(role, env), shutdown_s=deadline(env) + GRACE_MARGIN_S,
                           user=user))
    return ["/usr/sbin/nginx", "-p", str(prefix), "-c", str(conf), "-e", "stderr"]


def wait_for(path: Path, server: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until gunicorn's master has bound its socket, so nginx's first answers are the app's."""
    end = time.monotonic() + timeout
    while not path.exists() and server.poll() is None and time.monotonic() < end:
        time.sleep(0.05)


def main(role: str) -> int:
    if role not in APPS:
        print(f"twintee: unknown role {role!r}; expected one of {sorted(APPS)}", file=sys.stderr)
        return 2
    env = {**OPENMP_ENV, **os.environ}
    run_dir = Path(tempfile.mkdtemp(prefix="twintee-"))  # 0700: only this user reaches gunicorn
    socket = run_dir / f"{role}.sock"
    server = subprocess.Popen(gunicorn_command(role, env, socket), env=env)
    wait_for(socket, server)
    front = subprocess.Popen(nginx_command(role, env, run_dir, socket), env=env)
    stopping = []

    def stop(signum, frame):
        # nginx first closes its port (SIGQUIT) and relays what is in flight; gunicorn then ends gracefully.
        stopping.append(signum)
        for proc, sig in ((front, signal.SIGQUIT), (server, signal.SIGTERM)):
            if proc.poll() is None:
                proc.send_signal(sig)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Either one exiting ends the container (exit 4: a refused configuration), and the restart policy
    # decides what happens next, as the launcher's supervision does outside containers.
    while server.poll() is None and front.poll() is None:
        time.sleep(0.2)
    if not stopping:
        stop(signal.SIGTERM, None)
    limit = deadline(env) + 2 * GRACE_MARGIN_S
    for proc in (front, server):
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0 if stopping else (server.returncode or front.returncode or 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
