"""node1/ledger.py and node1/ledger_verify.py: rows exact under concurrency, chained and signed; an
edited, deleted or reordered row is named by `make ledger-verify`."""
import pytest

from node1 import ledger_verify
from node1.ledger import Ledger, UsageRow
from node1.ledger_verify import appraise_signers, read_rows, verify_chain
from node1.store import Store
from tests.conftest import run_concurrently

T0 = 1_800_000_000.0


def row(tenant="a", ts=T0, prompt=3, completion=4):
    return UsageRow(tenant, ts, "m", prompt, completion, "stop", "n1", "n2", 15, 15)


@pytest.fixture()
def store(tmp_path):
    return Store.open("", tmp_path)


def filled(store, n=5) -> Ledger:
    ledger = Ledger(store)
    for i in range(n):
        ledger.record(row(ts=T0 + i, prompt=i))
    return ledger


def check(store):
    return verify_chain(read_rows(store), appraise_signers(store, None))


def test_an_untouched_ledger_verifies_and_sums_per_day(store):
    filled(store)
    assert check(store) is None
    assert Ledger(store).usage_by_day("a") == [{"date": "2027-01-15", "requests": 5, "prompt_tokens": 10,
                                                "completion_tokens": 20, "total_tokens": 30}]
    assert Ledger(store).usage_by_day("b") == []


def test_rows_from_many_threads_and_two_writers_form_one_exact_chain(store, tmp_path):
    one, two = Ledger(store), Ledger(Store.open("", tmp_path))  # two processes' worth of signers

    def write():
        for i in range(10):
            (one if i % 2 else two).record(row(prompt=1, completion=2))

    run_concurrently(write, 8)
    assert check(store) is None
    assert one.usage_by_day("a")[0] == {"date": "2027-01-15", "requests": 80, "prompt_tokens": 80,
                                        "completion_tokens": 160, "total_tokens": 240}


def test_an_edited_row_is_named(store):
    filled(store)
    store.rows("UPDATE ledger SET completion_tokens = 1 WHERE seq = 3")
    finding = check(store)
    assert (finding.seq, finding.kind) == (3, "edited")


def test_an_edit_with_the_chain_recomputed_fails_on_the_signature(store):
    from node1.ledger import row_hash
    filled(store)
    rows = read_rows(store)
    prev = rows[1]["row_hash"]
    for r in rows[2:]:  # the operator rewrites row 3 and re-links every later row
        fields = {c: r[c] for c in ("tenant", "ts", "model", "prompt_tokens", "completion_tokens", "finish_reason",
                                    "node1", "node2", "layers1", "layers2")}
        if r["seq"] == 3:
            fields["completion_tokens"] = 0
        digest = row_hash(prev, UsageRow(**fields))
        store.rows("UPDATE ledger SET completion_tokens = ?, prev_hash = ?, row_hash = ? WHERE seq = ?",
                   (fields["completion_tokens"], prev, digest, r["seq"]))
        prev = digest
    finding = check(store)
    assert (finding.seq, finding.kind) == (3, "unsigned")


def test_a_deleted_row_is_named(store):
    filled(store)
    store.rows("DELETE FROM ledger WHERE seq = 2")
    assert (check(store).seq, check(store).kind) == (3, "deleted")


def test_a_deleted_and_renumbered_row_is_named(store):
    filled(store)
    store.rows("DELETE FROM ledger WHERE seq = 2")
    store.rows("UPDATE ledger SET seq = seq - 1 WHERE seq > 2")
    assert (check(store).seq, check(store).kind) == (2, "deleted")


def test_a_reordered_row_is_named(store):
    filled(store)
    store.rows("UPDATE ledger SET seq = 100 WHERE seq = 2")  # rows 2 and 3 swap places, whole
    store.rows("UPDATE ledger SET seq = 2 WHERE seq = 3")
    store.rows("UPDATE ledger SET seq = 3 WHERE seq = 100")
    assert (check(store).seq, check(store).kind) == (2, "reordered")


def test_a_row_signed_by_an_unrecorded_key_is_named(store):
    filled(store)
    store.rows("DELETE FROM ledger_signers")
    assert (check(store).seq, check(store).kind) == (1, "unattested")


def test_the_cli_exits_1_naming_the_row(store, tmp_path, monkeypatch, capsys):
    filled(store)
    monkeypatch.setenv("TWINTEE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TWINTEE_LEDGER_URL", raising=False)
    assert ledger_verify.main(["--no-attestation"]) == 0
    assert "5 rows" in capsys.readouterr().out
    store.rows("UPDATE ledger SET tenant = 'b' WHERE seq = 4")
    assert ledger_verify.main(["--no-attestation"]) == 1
    assert "row 4: edited" in capsys.readouterr().out


def test_operators_are_credited_layer_tokens_by_identity(store):
    from node1.operators import shares

    ledger = Ledger(store)
    ledger.record(UsageRow("a", T0, "m", 10, 0, "stop", "m1", "m2", 20, 10))
    ledger.record(UsageRow("a", T0, "m", 5, 5, "stop", "m1", "m2b", 20, 10))
    ledger.record(UsageRow("a", T0 + 2 * 86400, "m", 100, 0, "stop", "m1", "m2", 20, 10))  # outside the period
    got = {(r["role"], r["measurement"]): (r["layer_tokens"], round(r["share"], 4))
           for r in shares(store, "2027-01-15", "2027-01-16")}
    assert got == {("node1", "m1"): (400, round(400 / 600, 4)), ("node2", "m2"): (100, round(100 / 600, 4)),
                   ("node2", "m2b"): (100, round(100 / 600, 4))}
