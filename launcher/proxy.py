"""One role's nginx: its configuration rendered from the measured template (attestation/proxy.py), its
private prefix inside the stack's runtime directory, and the command that runs it in the foreground."""
import os
import pwd
import shutil
from pathlib import Path

from attestation.proxy import render
from shared.config import env_int

# Each role's body limit, read from the same variables and defaults as the role's own config, so nginx
# refuses exactly what the app would (tests/test_proxy.py checks them against the configs).
NODE2_MAX_FRAME_BYTES = 64 << 20


def max_body_bytes(role: str, env: dict) -> int:
    if role == "node1":
        return env_int(env, "TWINTEE_MAX_BODY_BYTES", 1 << 20)
    if role == "node2":
        return NODE2_MAX_FRAME_BYTES
    return env_int(env, "TWINTEE_BROKER_MAX_REQUEST_BYTES", 1 << 20)


def nginx_binary() -> str:
    # Debian puts nginx in /usr/sbin, which a non-root user's PATH often lacks.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("nginx is not installed: `make setup` installs Debian's package (apt-get install nginx)")
    return found


def socket_path(run_dir: Path, role: str) -> Path:
    return run_dir / f"{role}.sock"


def prepare(role: str, run_dir: Path, host: str, port: int, env: dict, shutdown_s: float) -> list[str]:
    """Writes the role's nginx.conf under run_dir/<role>-nginx and -> the command that runs it."""
    prefix = run_dir / f"{role}-nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    # Only root may name a user; nginx's default then is `nobody`, which could not enter the private
    # runtime directory. Its workers run as the same user as gunicorn, whoever that is.
    user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
    conf = prefix / "nginx.conf"
    conf.write_text(render(role, host=host, port=port, socket=str(socket_path(run_dir, role)), prefix=str(prefix),
                           max_body=max_body_bytes(role, env), shutdown_s=shutdown_s, user=user))
    return [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
