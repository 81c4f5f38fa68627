"""Tests for the evidence envelope, the measurements of a checkout and the simulated platform files."""
import json
import stat

import pytest

from attestation.errors import EvidenceError, MeasureError, ProviderError
from attestation.evidence import (
    BODY_FIELDS, hardware_report_data, make_body, validate)
from attestation.measure import code_digest, combine, differing_components, measure_node, role_files
from attestation.providers.simulated import SimulatedAttester, init_simulated_platform

MANIFEST_SHA = "ab" * 32


def make_project(root):
    files = {
        "node1/app.py": "print('node1')\n", "node2/engine.py": "print('node2')\n",
        "shared/config.py": "X = 1\n", "attestation/verify.py": "Y = 2\n",
        "webui/index.html": "<html></html>", "webui/app.js": "let a;", "webui/style.css": "a{}",
        "webui/notes.txt": "not code", "node1/__pycache__/app.cpython-311.pyc": "junk",
        "attestation/tests/test_x.py": "def test(): pass\n", "broker/app.py": "Z = 3\n",
        "release/bless.py": "owner's tool\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "project")


@pytest.fixture
def node1_measurement(project):
    return measure_node(project, "node1", MANIFEST_SHA, {"role": "node1", "split_layer": 15, "model_id": "m"})


def test_role_files_follow_the_role(project):
    node1 = {p.as_posix() for p in role_files(project, "node1")}
    node2 = {p.as_posix() for p in role_files(project, "node2")}
    assert "webui/app.js" in node1 and "webui/style.css" in node1 and "webui/index.html" in node1
    assert "webui/notes.txt" not in node1
    assert not any("__pycache__" in p or "/tests/" in p for p in node1)
    assert "node2/engine.py" in node2 and not any(p.startswith(("webui/", "node1/")) for p in node2)
    broker = {p.as_posix() for p in role_files(project, "broker")}
    assert broker == {"attestation/verify.py", "broker/app.py"}  # no model code, no release tooling
    assert not any(p.startswith("release/") for p in node1 | node2 | broker)


def test_code_digest_moves_with_the_code_it_covers(project):
    before = {role: code_digest(project, role) for role in ("node1", "node2", "broker")}
    (project / "webui/app.js").write_text("let b;")
    assert code_digest(project, "node1") != before["node1"]
    assert code_digest(project, "node2") == before["node2"]  # node2 does not run the web page
    (project / "node1/__pycache__/app.cpython-311.pyc").write_text("other junk")
    (project / "attestation/tests/test_x.py").write_text("changed")
    assert code_digest(project, "broker") == before["broker"]


def test_code_digest_covers_file_names_not_only_bytes(project):
    before = code_digest(project, "broker")
    (project / "broker/app.py").rename(project / "broker/application.py")
    assert code_digest(project, "broker") != before


def test_measure_node_components_and_measurement(project, node1_measurement):
    m = node1_measurement
    assert m["role"] == "node1" and set(m["components"]) == {"code", "manifest", "config"}
    assert m["components"]["manifest"] == MANIFEST_SHA
    assert m["measurement"] == combine(m["components"])
    other = measure_node(project, "node1", MANIFEST_SHA, {"role": "node1", "split_layer": 16, "model_id": "m"})
    assert other["measurement"] != m["measurement"]
    assert differing_components(m["components"], other["components"]) == ["config"]


def test_measure_rejects_bad_inputs(project, tmp_path):
    with pytest.raises(MeasureError):
        measure_node(project, "node3", MANIFEST_SHA, {})
    with pytest.raises(MeasureError):
        measure_node(project, "node1", "not-hex", {})
    with pytest.raises(MeasureError):
        code_digest(tmp_path / "empty", "broker")


def test_body_is_json_and_validates(node1_measurement):
    body = make_body("tdx", node1_measurement, bytes(range(64)), 1000.5, debug=False)
    ev = {**body, "quote": "00ff"}
    assert validate(json.loads(json.dumps(ev))) == ev
    assert tuple(body) == BODY_FIELDS
    with pytest.raises(ValueError):
        make_body("tdx", node1_measurement, b"short", 1000.0, debug=False)


@pytest.mark.parametrize("mutate", [
    lambda e: e.update(prompt="hello"),  # the key set is closed: no room for content
    lambda e: e.pop("issued_at"),
    lambda e: e.update(tee_type="sgx"),
    lambda e: e.update(version=True),
    lambda e: e.update(role="node3"),
    lambda e: e.update(measurement="zz" * 32),
    lambda e: e.update(report_data="00" * 32),
    lambda e: e.update(issued_at=float("nan")),
    lambda e: e.update(issued_at="now"),
    lambda e: e.update(debug="no"),
    lambda e: e["components"].pop("config"),
])
def test_validate_rejects_malformed(node1_measurement, mutate):
    ev = {**make_body("tdx", node1_measurement, bytes(64), 1.0, debug=False), "quote": "00"}
    mutate(ev)
    with pytest.raises(EvidenceError) as info:
        validate(ev)
    assert info.value.check == "shape"


def test_hardware_report_data_binds_role_and_measurement():
    rd, meas = bytes(range(64)), "11" * 32
    base = hardware_report_data(rd, "node1", meas)
    assert len(base) == 64
    assert hardware_report_data(rd, "node2", meas) != base
    assert hardware_report_data(rd, "node1", "22" * 32) != base
    assert hardware_report_data(bytes(64), "node1", meas) != base


def test_simulated_platform_is_idempotent_and_private(tmp_path):
    sim = tmp_path / "sim"
    root = init_simulated_platform(sim)
    assert len(root) == 32 and init_simulated_platform(sim) == root
    for f in sim.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name


def test_simulated_platform_refuses_a_foreign_certificate(tmp_path):
    init_simulated_platform(tmp_path / "a")
    init_simulated_platform(tmp_path / "b")
    (tmp_path / "a" / "platform-cert.json").write_bytes((tmp_path / "b" / "platform-cert.json").read_bytes())
    with pytest.raises(ProviderError):
        init_simulated_platform(tmp_path / "a")


def test_simulated_evidence_shape(tmp_path, node1_measurement):
    init_simulated_platform(tmp_path / "sim")
    clock = iter([1234.0]).__next__
    ev = SimulatedAttester(measurement=node1_measurement, sim_dir=tmp_path / "sim", clock=clock).evidence(bytes(64))
    assert validate(json.loads(json.dumps(ev)))["issued_at"] == 1234.0
    assert ev["tee_type"] == "simulated" and ev["debug"] is False and len(bytes.fromhex(ev["signature"])) == 64


def test_simulated_attester_never_creates_a_platform(tmp_path, node1_measurement):
    with pytest.raises(ProviderError):
        SimulatedAttester(measurement=node1_measurement, sim_dir=tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
