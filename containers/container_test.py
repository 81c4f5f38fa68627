"""`make container-test`: builds the three images with podman, brings docker-compose.yml up, and checks
that the containers serve the unsplit model's tokens under the checkout's measurements, that the images
hold exactly the measured files and rebuild to identical layers, and that nothing is left running.

Run from the checkout's virtualenv as root (podman is rootful here). Prints one line per step; exits 1
at the first failed check, after tearing everything down.
"""
import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from attestation.measure import code_digest, role_files  # noqa: E402

RUN = ROOT / "containers" / ".run"
RELEASE = RUN / "release"
COMPOSE = os.environ.get("TWINTEE_COMPOSE_VENV", "/var/cache/twintee/compose-venv") + "/bin/podman-compose"
PROJECT = "twintee-test"
ROLES = ("broker", "node2", "node1")  # the compose file's dependency order
APP_UID = 10001                       # the images' user: the release files must be readable by it
TAG = "test"
LOCAL_BASE = "localhost/twintee-base:bookworm"  # containers/base_image.sh makes it
BASE_IMAGE = os.environ.get("TWINTEE_BASE_IMAGE", LOCAL_BASE)
# Here torch's CPU wheel lies on disk and pip reaches PyPI through a proxy with its own CA.
WHEELS = Path(os.environ.get("TWINTEE_WHEEL_DIR", "/opt/wheels"))
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
KERNEL_LIBRARY = "shared/q4/build/twintee_q4.so"  # built in the image from measured sources
PORT = int(os.environ.get("TWINTEE_TEST_PORT_BASE", "15100")) + 90  # node1's published port
REBUILT = "node2"  # the image rebuilt without cache: torch, pip's packages and the compiled kernel
PROMPT, MAX_TOKENS = "What is the capital of France?", 24
START = time.monotonic()


class Failed(Exception):
    """A check that did not hold."""


def say(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {message}", flush=True)


def run(*cmd: str, env: dict | None = None, check: bool = True) -> str:
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise Failed(f"{' '.join(cmd[:4])} ... exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def image(role: str, tag: str = TAG) -> str:
    return f"localhost/twintee-{role}:{tag}"


@functools.cache
def source_date_epoch() -> str:
    """The commit's time: every file in every layer gets it, so a rebuild of the commit is identical.
    Read once: a commit made while the test runs must not change the rebuild's."""
    return run("git", "log", "-1", "--format=%ct").strip()


def build(role: str, tag: str = TAG, no_cache: bool = False) -> list[str]:
    """Builds one image; -> its layer digests."""
    epoch = source_date_epoch()
    args = ["podman", "build", "--format", "docker", "--timestamp", epoch, "--build-arg", f"SOURCE_DATE_EPOCH={epoch}",
            "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-f", f"Dockerfile.{role}", "-t", image(role, tag)]
    if role != "broker" and WHEELS.is_dir():
        args += ["-v", f"{WHEELS}:/wheels:ro", "--build-arg", "TORCH_SOURCE=--no-index --find-links /wheels"]
    if CA_BUNDLE.is_file():
        args += ["-v", f"{CA_BUNDLE}:/run/build-ca.crt:ro", "--build-arg", "CA_BUNDLE=/run/build-ca.crt"]
    run(*args, *(["--no-cache"] if no_cache else []), ".")
    return layers(image(role, tag))


def layers(name: str) -> list[str]:
    return run("podman", "image", "inspect", "--format", "{{range .RootFS.Layers}}{{println .}}{{end}}", name).split()


def check_image_files(role: str) -> None:
    """/app must hold exactly the role's measured files (and the kernel built from measured sources)."""
    found = set(run("podman", "run", "--rm", "--entrypoint", "find", image(role), "/app", "-type", "f").split())
    want = {f"/app/{p.as_posix()}" for p in role_files(ROOT, role)}
    want |= {f"/app/{KERNEL_LIBRARY}"} if role != "broker" else set()
    if found != want:
        raise Failed(f"{role}'s /app differs from its measurement list: extra {sorted(found - want)[:5]}, "
                     f"missing {sorted(want - found)[:5]}")
    inside = run("podman", "run", "--rm", "--entrypoint", "python", image(role), "-c",
                 f"from attestation.measure import code_digest; print(code_digest('/app', '{role}'))").strip()
    if inside != code_digest(ROOT, role):
        raise Failed(f"{role}'s code digest in the image {inside[:16]} is not the checkout's {code_digest(ROOT, role)[:16]}")
    say(f"{role}: /app holds exactly its {len(want)} measured files; code digest {inside[:16]}… = the checkout's")


def prepare_release() -> None:
    """The release the containers serve: prepared once, re-blessed for this checkout on every run."""
    command = "bless" if (RELEASE / "policy.json").exists() else "prepare"
    run(sys.executable, "-m", "release", command, "--data-dir", str(RELEASE), env={"PYTHONPATH": str(ROOT)})
    run("chown", "-R", f"{APP_UID}:{APP_UID}", str(RELEASE))
    say(f"release: {command} {RELEASE.relative_to(ROOT)} (owned by uid {APP_UID}, the images' user)")


def compose(*args: str, check: bool = True) -> str:
    env = {"TWINTEE_RELEASE_DIR": str(RELEASE), "TWINTEE_IMAGE_TAG": TAG, "TWINTEE_NODE1_PUBLISH": f"127.0.0.1:{PORT}"}
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.simulated.yml"]
    return run(COMPOSE, "-p", PROJECT, *files, *args, env=env, check=check)


def container(service: str) -> str:
    names = run("podman", "ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}",
                "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}").split()
    if len(names) != 1:
        raise Failed(f"expected one {service} container, found {names}")
    return names[0]


def wait_healthy(service: str, timeout: float = 600.0) -> None:
    """Runs the image's HEALTHCHECK until it passes. podman schedules healthchecks with systemd timers,
    and this host has no systemd, so the test plays the timer (podman 4.3 also cannot wait for health)."""
    name, deadline = container(service), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run("podman", "inspect", "--format", "{{.State.Status}}", name).strip() not in ("running", "created"):
            raise Failed(f"{service} stopped:\n{run('podman', 'logs', '--tail', '30', name, check=False)}")
        if subprocess.run(["podman", "healthcheck", "run", name], capture_output=True).returncode == 0:
            status = run("podman", "inspect", "--format", "{{.State.Health.Status}}", name).strip()
            say(f"{service}: {status} ({name})")
            return
        time.sleep(3)
    raise Failed(f"{service} not healthy after {timeout:.0f} s:\n{run('podman', 'logs', '--tail', '30', name, check=False)}")


def bring_up() -> None:
    """Each service in dependency order, each after the one before is healthy: what depends_on's
    service_healthy asks, which podman-compose ignores on podman < 4.6 (it says so)."""
    for service in ROLES:
        compose("up", "-d", "--no-build", "--no-deps", service)
        wait_healthy(service)


def health(service: str, port: int) -> dict:
    code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/health').read().decode())"
    return json.loads(run("podman", "exec", container(service), "python", "-c", code))


def check_measurements() -> None:
    measured = json.loads(run(sys.executable, "-m", "attestation", "measure", "--data-dir", str(RELEASE),
                              env={"PYTHONPATH": str(ROOT)}))["roles"]
    reported = {"node1": requests.get(f"http://127.0.0.1:{PORT}/health", timeout=10).json(), "node2": health("node2", 5001)}
    for role, body in reported.items():
        if body.get("measurement") != measured[role]["measurement"]:
            raise Failed(f"{role} reports measurement {body.get('measurement')}, the checkout measures "
                         f"{measured[role]['measurement']}")
        say(f"{role}: reports measurement {body['measurement'][:16]}… tee={body['tee']} = `python -m attestation measure`")


def create_tenant() -> str:
    out = run("podman", "exec", container("node1"), "python", "-m", "node1.tenants", "create", "container-test")
    say("tenant container-test created inside node1's container (its ledger volume)")
    return out.strip().splitlines()[-1]


def reference_tokens() -> tuple[list[int], int]:
    """transformers' generate() on the unsplit model, outside the containers: (tokens, eos id)."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the report
    import torch
    from release.source import DEFAULT_SOURCE, load_source

    model, tok, _ = load_source(DEFAULT_SOURCE)
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  tokenize=True, return_dict=True)["input_ids"]
    with torch.inference_mode():
        out = model.generate(torch.tensor([list(ids)]), max_new_tokens=MAX_TOKENS, do_sample=False)
    return out[0, len(ids):].tolist(), tok.eos_token_id


def generate(key: str) -> dict:
    r = requests.post(f"http://127.0.0.1:{PORT}/generate", headers={"Authorization": f"Bearer {key}"},
                      json={"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}, timeout=300)
    if r.status_code != 200:
        raise Failed(f"/generate answered {r.status_code}: {r.text[:300]}")
    return r.json()


def check_generation(key: str) -> list[int]:
    out = generate(key)
    ref, eos = reference_tokens()
    expected = ref[:-1] if ref and ref[-1] == eos else ref
    if out["token_ids"] != expected:
        raise Failed(f"containers gave {out['token_ids']}, generate() outside gives {expected}")
    say(f"/generate through the containers: {out['text']!r} token ids {out['token_ids']} = generate() outside "
        f"({out['finish_reason']}, {out['metrics']['tokens_per_sec']} tok/s)")
    metrics = requests.get(f"http://127.0.0.1:{PORT}/metrics", timeout=10).text
    socket_frames = re.search(r'^twintee_link_frames_total\{transport="socket"\} (\S+)$', metrics, re.M)
    if not socket_frames or float(socket_frames.group(1)) < len(out["token_ids"]) - 1:
        raise Failed("node1's steps did not ride node2's step socket across the container network")
    say(f"node1's steps over node2's step socket (node2:5004): {float(socket_frames.group(1)):.0f} frames")
    return out["token_ids"]


def check_restart(key: str, tokens: list[int]) -> None:
    """node2's processes killed from the host: its restart policy brings it back, node1 re-handshakes,
    and the same request gives the same tokens."""
    name = container("node2")
    before = int(run("podman", "inspect", "--format", "{{.RestartCount}}", name))
    os.kill(int(run("podman", "inspect", "--format", "{{.State.Pid}}", name)), 9)
    deadline = time.monotonic() + 60
    while int(run("podman", "inspect", "--format", "{{.RestartCount}}", name)) == before:
        if time.monotonic() > deadline:
            raise Failed("node2 was not restarted within 60 s of being killed")
        time.sleep(1)
    wait_healthy("node2")
    wait_healthy("node1")
    again = generate(key)["token_ids"]
    if again != tokens:
        raise Failed(f"after node2's restart the tokens are {again}, before {tokens}")
    say(f"node2 killed (SIGKILL to its init): restarted by its policy (restart count {before} -> "
        f"{before + 1}), the same request gives the same tokens")


def check_rebuild(first: list[str]) -> None:
    again = build(REBUILT, tag=f"{TAG}-rebuild", no_cache=True)
    run("podman", "rmi", image(REBUILT, f"{TAG}-rebuild"), check=False)
    if again != first:
        raise Failed(f"{REBUILT} rebuilt without cache has other layers:\n{first}\n{again}")
    say(f"{REBUILT}: rebuilt without cache, {len(again)} layers byte-identical (last {again[-1][7:23]}…)")


def tear_down() -> None:
    compose("down", "-v", "-t", "40", check=False)
    left = run("podman", "ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "{{.Names}}").split()
    volumes = [v for v in run("podman", "volume", "ls", "--format", "{{.Name}}").split() if v.startswith(PROJECT)]
    networks = [n for n in run("podman", "network", "ls", "--format", "{{.Name}}").split() if n.startswith(PROJECT)]
    if left or volumes or networks:
        raise Failed(f"left behind: containers {left}, volumes {volumes}, networks {networks}")
    say("torn down: no container, volume or network of the project left")


def build_only() -> int:
    """`make container-images`: the images compose runs by default (tag latest), with their layers."""
    for role in ROLES:
        digests = build(role, tag="latest")
        say(f"{role}: {image(role, 'latest')} top layer {digests[-1]}")
    return 0


def main() -> int:
    if "--build-only" in sys.argv:
        return build_only()
    run(str(ROOT / "containers" / "host_setup.sh"))
    if BASE_IMAGE == LOCAL_BASE:
        run(str(ROOT / "containers" / "base_image.sh"))
    say(f"podman {run('podman', 'version', '--format', '{{.Client.Version}}').strip()}, runc, "
        f"{next(l for l in run(COMPOSE, 'version').splitlines() if 'podman-compose' in l)}, base {BASE_IMAGE}")
    prepare_release()
    built = {}
    for role in ROLES:
        t = time.monotonic()
        built[role] = build(role)
        say(f"{role}: built {image(role)} in {time.monotonic() - t:.0f} s, {len(built[role])} layers")
        check_image_files(role)
    try:
        compose("down", "-v", check=False)  # a previous run's leftovers
        bring_up()
        check_measurements()
        key = create_tenant()
        check_restart(key, check_generation(key))
    finally:
        tear_down()
    check_rebuild(built[REBUILT])
    say("container-test passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as e:
        say(f"FAILED: {e}")
        sys.exit(1)
