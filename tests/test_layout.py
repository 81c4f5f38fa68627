"""One folder per process or tool: what each top-level package may import, and what each image copies.

attestation/ is the library everyone uses and imports none of ours; shared/ is what both nodes run;
the broker runs no model code; the owner's release/ tooling, the launcher, the client and the tests
run in no node. Each Dockerfile copies exactly the folders its role's measurement covers.
"""
import ast
import re
from pathlib import Path

import pytest

from attestation.measure import ROLE_DIRS

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {
    "attestation": set(),
    "shared": {"attestation"},
    "broker": {"attestation"},
    "node1": {"shared", "attestation"},
    "node2": {"shared", "attestation"},
    "release": {"shared", "attestation", "broker"},  # the owner's tool derives shard keys as the broker does
    "launcher": {"shared", "attestation"},
    "client": {"shared", "attestation"},  # the sealed format both halves share
}
OURS = set(MAY_IMPORT) | {"webui", "tests", "benchmarks"}


def imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return (found & OURS) - {package}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_what_lies_below_it(package):
    assert imported_packages(package) <= MAY_IMPORT[package]


def test_no_two_packages_import_each_other():
    graph = {p: imported_packages(p) for p in MAY_IMPORT}
    assert not [(a, b) for a in graph for b in graph[a] if a in graph.get(b, set())]


@pytest.mark.parametrize("role", sorted(ROLE_DIRS))
def test_each_image_copies_exactly_what_its_measurement_covers(role):
    dockerfile = (ROOT / f"Dockerfile.{role}").read_text()
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", dockerfile, re.M))
    assert copied == set(ROLE_DIRS[role])


def test_one_error_handler_and_one_config_error_for_every_app():
    import attestation.service as service
    import broker.app
    import broker.config
    import node1.app
    import node2.app
    import shared.config

    for app_module in (broker.app, node1.app, node2.app):
        assert app_module.install_error_handlers is service.install_error_handlers
        assert app_module.install_metrics is service.install_metrics
    assert broker.config.ConfigError is shared.config.ConfigError is service.ConfigError


def test_the_q4_kernels_source_is_in_both_nodes_measurements():
    # The nodes compile and load shared/q4's C++ at setup: a changed kernel must change the measurement.
    from attestation.measure import role_files

    for role in ("node1", "node2"):
        files = {p.as_posix() for p in role_files(ROOT, role)}
        assert {"shared/q4/kernel_avx512.cpp", "shared/q4/kernel_avx2.cpp", "shared/q4/lanes.h"} <= files, role
