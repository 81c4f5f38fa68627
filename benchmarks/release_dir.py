"""Which release the benchmark's stack runs from: `make run`'s data/ when it is current, else our own."""
from pathlib import Path

from attestation.release_dir import previous_policy, read_manifest, reference_measurements
from release.bless import bless
from release.publish import publish
from release.source import DEFAULT_SOURCE

ROOT = Path(__file__).resolve().parents[1]
OWN_RELEASE = ROOT / "benchmarks" / "out" / "release"


def is_current(data_dir: Path) -> bool:
    """Whether data_dir's signed policy blesses this checkout's code (else the nodes would refuse each other)."""
    policy = previous_policy(data_dir)
    if policy is None:
        return False
    try:
        manifest_sha, body = read_manifest(data_dir)
    except Exception:  # noqa: BLE001 - any unreadable manifest means "not usable", not a crash
        return False
    refs = reference_measurements(ROOT, manifest_sha, body)
    return all(policy.roles.get(role, {}).get("measurement") == m["measurement"] for role, m in refs.items())


def release_dir(loaded) -> tuple[Path, str]:
    """-> (data dir, how it was chosen). `loaded` is the (model, tokenizer, model_id) already in memory."""
    shared_data = ROOT / "data"
    if (shared_data / "policy.json").exists():
        if is_current(shared_data):
            return shared_data, "data/ (made by `make run`)"
        note = "data/ is blessed for other code (run `make prepare`); used benchmarks/out/release"
    else:
        note = "no data/policy.json; used benchmarks/out/release"
    if (OWN_RELEASE / "model" / "manifest.json").exists():
        # Our own scratch release: re-blessing it for this checkout's code touches nothing of `make run`'s.
        bless(ROOT, OWN_RELEASE)
    else:
        publish(DEFAULT_SOURCE, OWN_RELEASE, loaded=loaded)
    return OWN_RELEASE, note
