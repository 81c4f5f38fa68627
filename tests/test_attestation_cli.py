"""Tests for `python -m attestation`, run as a real subprocess from the repository root."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from attestation.measure import measure_node
from attestation.policy import load_policy
from attestation.release_dir import release_public_key, security_config

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "tee-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"TEE samples folder {SAMPLES} is absent")
INSIDE, AFTER = "1751000000", "1760000000"
MANIFEST_BODY = {"model_id": "test/model", "version": 2, "split_layer": 4}


def run(*args, tool="attestation"):
    done = subprocess.run([sys.executable, "-m", tool, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def verify(*extra, quote=None):
    return run("verify", "--quote", quote or SAMPLES / "tdx_quote",
               "--collateral", SAMPLES / "tdx_quote_collateral.json", *extra)


@pytest.fixture
def project(tmp_path):
    for rel in ("node1/app.py", "node2/engine.py", "shared/config.py", "attestation/verify.py", "broker/app.py",
                "release/bless.py", "webui/app.js"):
        (tmp_path / "project" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "project" / rel).write_text(f"# {rel}\n")
    return tmp_path / "project"


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    (data / "model").mkdir(parents=True)
    (data / "model" / "manifest.json").write_text(json.dumps({"body": MANIFEST_BODY}))
    return data


@needs_samples
def test_verify_sample_inside_window_exits_zero():
    code, out, err = verify("--at", INSIDE)
    assert code == 0, err
    verdict = json.loads(out)
    assert verdict["ok"] and verdict["tcb_status"] == "UpToDate"


@needs_samples
def test_verify_sample_after_next_update_exits_nonzero():
    code, out, _ = verify("--at", AFTER)
    verdict = json.loads(out)
    assert code == 1 and not verdict["ok"] and verdict["failed"] == "collateral"


@needs_samples
def test_verify_reads_hex_quote_files(tmp_path):
    hex_file = tmp_path / "quote.hex"
    hex_file.write_text("0x" + (SAMPLES / "tdx_quote").read_bytes().hex() + "\n")
    code, out, _ = verify("--at", INSIDE, quote=hex_file)
    assert code == 0 and json.loads(out)["ok"]


@needs_samples
def test_verify_wrong_report_data_exits_nonzero():
    code, out, _ = verify("--at", INSIDE, "--report-data", "00" * 64)
    assert code == 1 and json.loads(out)["failed"] == "report_data"


@needs_samples
def test_verify_missing_file_exits_two(tmp_path):
    code, out, _ = verify("--at", INSIDE, quote=tmp_path / "missing")
    assert code == 2 and json.loads(out)["ok"] is False


def test_measure_without_manifest_prints_code_digests(project, tmp_path):
    code, out, err = run("measure", "--root", project, "--data-dir", tmp_path / "empty")
    assert code == 0, err
    result = json.loads(out)
    assert result["manifest_sha256"] is None and set(result["roles"]) == {"node1", "node2", "broker"}
    assert len(bytes.fromhex(result["roles"]["node1"]["components"]["code"])) == 32


def test_measure_prints_reference_measurements(project, data_dir):
    code, out, err = run("measure", "--root", project, "--data-dir", data_dir)
    assert code == 0, err
    result = json.loads(out)
    sha = result["manifest_sha256"]
    expected = measure_node(project, "node2", sha, security_config("node2", MANIFEST_BODY))
    assert result["roles"]["node2"] == expected


@needs_samples
def test_bless_then_verify_with_the_policy(project, data_dir):
    code, out, err = run("bless", "--root", project, "--data-dir", data_dir, tool="release")
    assert code == 0, err
    policy = load_policy(data_dir / "policy.json", release_public_key(data_dir))
    assert json.loads(out)["roles"]["node1"] == policy.roles["node1"]["measurement"]
    assert verify("--at", INSIDE, "--policy", data_dir / "policy.json")[0] == 0
    signed = json.loads((data_dir / "policy.json").read_text())
    signed["body"]["tdx"]["min_tcb_status"] = "OutOfDate"  # a loosened, unsigned edit
    (data_dir / "policy.json").write_text(json.dumps(signed))
    code, out, _ = verify("--at", INSIDE, "--policy", data_dir / "policy.json")
    assert code == 2 and "signature" in json.loads(out)["error"]


def test_measure_lists_exactly_the_files_each_role_runs(project):
    listed = {}
    for role in ("node1", "node2", "broker"):
        code, out, err = run("measure", "--root", project, "--list", role)
        assert code == 0, err
        listed[role] = set(out.split())
    assert listed["node1"] == {"node1/app.py", "webui/app.js", "shared/config.py", "attestation/verify.py"}
    assert listed["node2"] == {"node2/engine.py", "shared/config.py", "attestation/verify.py"}
    assert listed["broker"] == {"broker/app.py", "attestation/verify.py"}  # no model code, no release tooling
