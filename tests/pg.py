"""A throwaway PostgreSQL server from Debian's packages for the ledger tests: initdb and pg_ctl in a
temp directory, on loopback, as the `postgres` user when the tests run as root (initdb refuses root)."""
import glob
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager


def pg_bin() -> str | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@contextmanager
def postgres_server(port: int):
    """-> a postgresql:// URL to a fresh database that is dropped, with its server, on exit."""
    bindir = pg_bin()
    folder = tempfile.mkdtemp(prefix="twintee-pg-")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    data = os.path.join(folder, "data")

    def run(*cmd):
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "twintee")
    run(f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(folder, "log"), "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=on", "start")
    try:
        yield f"postgresql://twintee@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)
