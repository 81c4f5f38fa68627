"""node1/tenants.py: keys shown once and stored as SHA-256, found by key id, revoked at once; the CLI."""
import hashlib
import os
import stat

import pytest

from node1 import tenants as tenants_module
from node1.store import Store
from node1.tenants import Policy, TenantError, Tenants, Unauthorized, ensure_key


@pytest.fixture()
def tenants(tmp_path):
    return Tenants(Store.open("", tmp_path))


def test_a_key_authenticates_its_tenant_and_only_its_hash_is_stored(tenants):
    key = tenants.create("alice", Policy(rpm=5, models=("m",)))
    tenant = tenants.authenticate(f"Bearer {key}")
    assert tenant.name == "alice" and tenant.policy == Policy(rpm=5, models=("m",))
    (key_id, digest), = tenants.store.rows("SELECT key_id, key_hash FROM tenants")
    secret = key.split("-", 2)[2]
    assert key_id == key.split("-")[1] and digest == hashlib.sha256(secret.encode()).hexdigest()
    dump = repr(tenants.store.rows("SELECT * FROM tenants"))
    assert secret not in dump and key not in dump


@pytest.mark.parametrize("secret", ["-starts-with-a-dash", "ends-with-", "a--b"])
def test_a_secret_holding_dashes_authenticates(tenants, monkeypatch, secret):
    # token_urlsafe draws from A-Z a-z 0-9 - _, so a real key holds "-" in its secret now and then.
    monkeypatch.setattr(tenants_module.secrets, "token_urlsafe", lambda n: secret)
    key = tenants.create("alice", Policy())
    assert key.split("-", 2)[2] == secret and tenants.authenticate(f"Bearer {key}").name == "alice"


@pytest.mark.parametrize("header, message", [
    (None, "no API key"), ("", "no API key"), ("Basic abc", "Bearer"), ("Bearer ", "Bearer"),
    ("Bearer tt-0000000000000000-nope", "invalid API key"), ("Bearer sk-whatever", "invalid API key"),
])
def test_missing_malformed_and_unknown_keys_are_refused(tenants, header, message):
    tenants.create("alice", Policy())
    with pytest.raises(Unauthorized, match=message):
        tenants.authenticate(header)


def test_a_right_key_id_with_a_wrong_secret_is_refused(tenants):
    key = tenants.create("alice", Policy())
    with pytest.raises(Unauthorized, match="invalid"):
        tenants.authenticate(f"Bearer {key[:-1]}{'A' if key[-1] != 'A' else 'B'}")


def test_revocation_takes_effect_on_the_next_request_and_a_new_key_replaces_it(tenants):
    key = tenants.create("alice", Policy())
    tenants.authenticate(f"Bearer {key}")
    with pytest.raises(TenantError, match="exists"):
        tenants.create("alice", Policy())
    tenants.revoke("alice")
    with pytest.raises(Unauthorized, match="revoked"):
        tenants.authenticate(f"Bearer {key}")
    new = tenants.create("alice", Policy())
    assert tenants.authenticate(f"Bearer {new}").name == "alice"
    with pytest.raises(Unauthorized):
        tenants.authenticate(f"Bearer {key}")


def test_policies_refuse_negative_limits():
    with pytest.raises(TenantError, match="RPM"):
        Policy(rpm=-1)


def test_the_dev_key_is_written_0600_once_and_reissued_when_stale(tenants, tmp_path):
    path = tmp_path / "dev-api-key"
    key = ensure_key(tenants, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_text().strip() == key
    assert ensure_key(tenants, path) == key
    tenants.revoke("dev")
    again = ensure_key(tenants, path)
    assert again != key and tenants.authenticate(f"Bearer {again}").name == "dev"


def test_the_cli_prints_the_key_alone_on_its_last_line_and_lists_no_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWINTEE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TWINTEE_LEDGER_URL", raising=False)
    assert tenants_module.main(["create", "alice", "--rpm", "3", "--models", "a,b"]) == 0
    key = capsys.readouterr().out.splitlines()[-1]
    tenant = Tenants(Store.open("", tmp_path)).authenticate(f"Bearer {key}")
    assert tenant.policy.rpm == 3 and tenant.policy.models == ("a", "b")
    assert tenants_module.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert '"name": "alice"' in listing and key.split("-", 2)[2] not in listing and "key" not in listing
    assert tenants_module.main(["revoke", "alice"]) == 0
    assert tenants_module.main(["revoke", "alice"]) == 2
