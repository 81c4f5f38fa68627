"""What can be checked of the images and compose files without podman: the build context and COPY lines
against the measurement lists, the compose file's structure and mounts, the TEE overrides, and that the
images' entrypoint starts what the launcher starts. `make container-test` builds and runs them for real."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attestation.measure import ROLE_DIRS, role_files
from launcher import proxy as launcher_proxy
from launcher import stack as launcher_stack
from shared.cpu import OPENMP_ENV

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "containers"))
import entrypoint  # noqa: E402  (containers/ is no package: the image runs the file)

ROLES = ("node1", "node2", "broker")
PORTS = {"node1": 5002, "node2": 5001, "broker": 5003}
KERNEL_COPY = "COPY --from=kernel /app/shared/q4/build/twintee_q4.so shared/q4/build/twintee_q4.so"


def dockerfile(role: str) -> str:
    return (ROOT / f"Dockerfile.{role}").read_text()


def final_stage(role: str) -> str:
    return dockerfile(role).rsplit("\nFROM ", 1)[1]


def compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


# --- the build context (.dockerignore) and the images' files ---

def _glob(pattern: str) -> re.Pattern:
    """Docker's (Go's filepath.Match) syntax: * and ? stop at /, **/ spans any directories."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out, i = out + {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])), i + 1
    return re.compile(out + r"\Z")


def _pattern_matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories."""
    parts, regex = path.split("/"), _glob(pattern)
    return any(regex.match("/".join(parts[:i])) for i in range(1, len(parts) + 1))


def in_context(path: str, patterns: list[str]) -> bool:
    """Whether `path` is in the build context: the last matching pattern decides."""
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _pattern_matches(pattern.lstrip("!"), path):
            included = negated
    return included


def context_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_pattern_rule_follows_docker():
    assert _pattern_matches("**/tests", "shared/q4/tests/x.py")
    assert _pattern_matches("webui/**/*.png", "webui/screenshot.png")
    assert _pattern_matches("*", "node1/app.py")  # through its parent directory
    assert not _pattern_matches("shared/q4/build", "shared/q4/build.py")


@pytest.mark.parametrize("role", ROLES)
def test_the_build_context_holds_exactly_each_roles_measured_files(role):
    tracked = subprocess.run(["git", "ls-files", *ROLE_DIRS[role]], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    on_disk = {p.relative_to(ROOT).as_posix() for d in ROLE_DIRS[role] for p in (ROOT / d).rglob("*") if p.is_file()}
    patterns = context_patterns()
    context = {p for p in set(tracked) | on_disk if in_context(p, patterns)}
    assert context == {p.as_posix() for p in role_files(ROOT, role)}


def test_the_build_context_holds_nothing_else():
    patterns = context_patterns()
    others = [p for p in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
              if p.split("/")[0] not in {d for dirs in ROLE_DIRS.values() for d in dirs} and in_context(p, patterns)]
    assert sorted(others) == ["containers/entrypoint.py", "containers/requirements-broker.txt",
                              "containers/requirements-node.txt", "requirements.lock"]


@pytest.mark.parametrize("role", ROLES)
def test_each_image_copies_its_measured_folders_into_app_and_nothing_else(role):
    stage = final_stage(role)
    copies = re.findall(r"^COPY (.+)$", stage.split("\nWORKDIR /app\n", 1)[1], re.M)
    folders = [c for c in copies if re.fullmatch(r"(\w+)/ \1/", c)]
    assert {c.split("/")[0] for c in folders} == set(ROLE_DIRS[role])
    extra = set(copies) - set(folders)
    want = {"containers/entrypoint.py /opt/twintee/entrypoint.py"}
    if role != "broker":  # the q4 kernel, built in its own stage from the measured sources
        want.add(KERNEL_COPY.removeprefix("COPY "))
    assert extra == want


@pytest.mark.parametrize("role", ROLES)
def test_each_image_is_pinned_non_root_checked_and_started_like_the_launcher(role):
    text, stage = dockerfile(role), final_stage(role)
    assert re.search(r"^ARG BASE_IMAGE=docker\.io/library/python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M)
    assert "USER 10001:10001" in stage
    assert f"'http://127.0.0.1:{PORTS[role]}/health'" in stage.split("HEALTHCHECK", 1)[1]
    assert f'CMD ["python", "/opt/twintee/entrypoint.py", "{role}"]' in stage
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    # Every pip install leaves no bytecode (it records source times) and reads only the lock's versions.
    installs = re.findall(r"pip install [^\n]*", text)
    assert installs and all("--no-compile" in line for line in installs)
    assert all("-c /opt/twintee/requirements.lock" in line for line in installs if " -r " in line)


@pytest.mark.parametrize("role", ["node1", "node2"])
def test_torch_never_comes_from_plain_pypi(role):
    text = dockerfile(role)
    assert 'ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"' in text
    torch_line = next(line for line in text.splitlines() if "torch==" in line)
    assert "--no-deps $TORCH_SOURCE torch==2.13.0" in torch_line
    # ... and the requirements that follow name the same version, so pip keeps the CPU build.
    assert "torch==2.13.0" in (ROOT / "containers" / "requirements-node.txt").read_text().split()


def test_image_requirements_are_pinned_and_locked():
    lock = {line.split("==")[0].lower().replace("_", "-") for line in (ROOT / "requirements.lock").read_text().split()}
    for name in ("requirements-node.txt", "requirements-broker.txt"):
        reqs = [line.split("#")[0].strip() for line in (ROOT / "containers" / name).read_text().splitlines()]
        for req in filter(None, reqs):
            package, version = req.split("==")
            assert version and (package.split("[")[0] in lock or package == "torch"), req
    broker = (ROOT / "containers" / "requirements-broker.txt").read_text()
    assert not [line for line in broker.splitlines() if line.startswith("torch")]


# --- docker-compose.yml and its overrides ---

def mounts(service: dict) -> list[tuple[str, str, str]]:
    # source:target[:mode], where a source may hold ${VAR:-default}
    return [tuple((re.split(r":(?![^{]*\})", v) + ["rw"])[:3]) for v in service.get("volumes", [])]


def test_compose_starts_broker_node2_node1_each_once_its_dependency_is_healthy():
    services = compose()["services"]
    assert set(services) == {"broker", "node2", "node1"}
    assert services["node2"]["depends_on"] == {"broker": {"condition": "service_healthy"}}
    assert services["node1"]["depends_on"] == {"node2": {"condition": "service_healthy"}}
    for role, service in services.items():
        assert service["restart"] == "unless-stopped"
        assert f"http://127.0.0.1:{PORTS[role]}/health" in " ".join(service["healthcheck"]["test"])
        assert "build" not in service  # images are built reproducibly by make container-images
    assert services["node1"]["ports"] == ["${TWINTEE_NODE1_PUBLISH:-127.0.0.1:5002}:5002"]
    assert not any("ports" in services[r] for r in ("node2", "broker"))
    assert services["node1"]["environment"]["TWINTEE_NODE2_URL"] == "http://node2:5001"
    assert services["node2"]["environment"]["TWINTEE_BROKER_URL"] == "http://broker:5003"


def test_each_service_mounts_only_what_it_needs():
    services = compose()["services"]
    for role, service in services.items():
        for source, target, mode in mounts(service):
            if source in ("node1-data", "audit"):  # the only writable state: the ledger, the audit log
                assert (role, target, mode) in {("node1", "/data", "rw"), ("broker", "/audit", "rw")}
                continue
            assert mode == "ro" and source.startswith("${TWINTEE_RELEASE_DIR:-./data}/"), (role, source)
            assert not source.endswith(".key") and "simulated-tee" not in source, (role, source)
            assert source.endswith(target.removeprefix("/data")), (role, source, target)
    shards = {role: [t for _, t, _ in mounts(s) if t.endswith(".shard")] for role, s in services.items()}
    assert shards == {"broker": [], "node2": ["/data/model/node2.${TWINTEE_MODEL_VERSION:-v1}.shard"],
                      "node1": ["/data/model/node1.${TWINTEE_MODEL_VERSION:-v1}.shard"]}
    assert services["broker"]["secrets"] == ["master_key"]
    assert compose()["secrets"]["master_key"]["file"].endswith("/keys/master.key")


def test_the_simulated_override_alone_brings_the_software_platform():
    services = compose("docker-compose.simulated.yml")["services"]
    for role in ROLES:
        assert services[role]["environment"]["TWINTEE_TEE"] == "simulated"
    for role in ("node1", "node2"):
        assert mounts(services[role]) == [("${TWINTEE_RELEASE_DIR:-./data}/simulated-tee", "/data/simulated-tee", "ro")]
    assert "volumes" not in services["broker"]


def test_the_dstack_override_uses_the_agent_socket_and_images_by_digest():
    services = compose("docker-compose.dstack.yml")["services"]
    for role in ROLES:
        assert services[role]["environment"]["TWINTEE_TEE"] == "dstack"
        assert "sha256" in services[role]["image"] and services[role]["image"].startswith("${")
    for role in ("node1", "node2"):
        assert mounts(services[role]) == [("/var/run/dstack.sock", "/var/run/dstack.sock", "rw")]


def test_the_confidential_vm_override_uses_configfs_tsm():
    services = compose("docker-compose.tdx.yml")["services"]
    for role in ROLES:
        assert services[role]["environment"]["TWINTEE_TEE"] == "${TWINTEE_TEE:-tdx}"
    for role in ("node1", "node2"):
        tsm = "/sys/kernel/config/tsm/report"
        assert mounts(services[role]) == [(tsm, tsm, "rw")]
        assert services[role]["cap_drop"] == ["ALL"]


# --- the images' entrypoint starts what the launcher starts ---

@pytest.mark.parametrize("role", ROLES)
def test_the_entrypoint_runs_the_launchers_gunicorn_command(role):
    env = {"TWINTEE_SHUTDOWN_DEADLINE_S": "7"}
    ours = entrypoint.gunicorn_command(role, env, Path("/run/x.sock"))
    theirs = launcher_stack.gunicorn_command(role, env, bind="unix:/run/x.sock")
    assert ours[1:] == theirs[1:]
    assert entrypoint.APPS == launcher_stack.APPS
    assert entrypoint.port(role, {}) == launcher_stack.PORT_VARS[role][2] == PORTS[role]
    assert entrypoint.OPENMP_ENV == OPENMP_ENV  # libgomp reads it at start: the launcher sets it too


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("env", [{}, {"TWINTEE_MAX_BODY_BYTES": "4096", "TWINTEE_BROKER_MAX_REQUEST_BYTES": "2048"}])
def test_the_entrypoints_nginx_has_the_launchers_limits(role, env, tmp_path):
    assert entrypoint.max_body_bytes(role, env) == launcher_proxy.max_body_bytes(role, env)
    command = entrypoint.nginx_command(role, {**env, "TWINTEE_SHUTDOWN_DEADLINE_S": "20"}, tmp_path, tmp_path / f"{role}.sock")
    conf = Path(command[command.index("-c") + 1]).read_text()
    launcher_proxy.prepare(role, tmp_path / "launcher", "0.0.0.0", PORTS[role], env, 30.0)
    theirs = (tmp_path / "launcher" / f"{role}-nginx" / "nginx.conf").read_text()
    # The same configuration but for where each keeps its files.
    assert conf.replace(str(tmp_path), "P") == theirs.replace(str(tmp_path / "launcher"), "P")
