"""`make ledger-verify`: checks the usage ledger's hash chain, each row's signature, and that each
signing key was attested by a node1 this release blesses; names the first row edited, deleted or moved."""
import json
import os
import sys
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node1.ledger import COLUMNS, GENESIS, UsageRow, row_hash, signed_message
from node1.store import Store


@dataclass(frozen=True)
class Finding:
    seq: int
    kind: str  # edited | deleted | reordered | unsigned | unattested
    detail: str

    def __str__(self) -> str:
        return f"row {self.seq}: {self.kind}: {self.detail}"


def read_rows(store: Store) -> list[dict]:
    names = ("seq", *COLUMNS, "prev_hash", "row_hash", "signer", "signature")
    return [dict(zip(names, r)) for r in store.rows(f"SELECT {', '.join(names)} FROM ledger ORDER BY seq")]


def verify_chain(rows: list[dict], signers: dict[str, bool]) -> Finding | None:
    """The first problem walking the rows in seq order, or None. `signers`: public key -> attested."""
    stored = {r["row_hash"] for r in rows}
    prev, expected_seq = GENESIS, 1
    for r in rows:
        own = row_hash(r["prev_hash"], UsageRow(**{c: r[c] for c in COLUMNS}))
        if own != r["row_hash"]:
            return Finding(r["seq"], "edited", "its contents no longer hash to its recorded hash")
        if r["prev_hash"] != prev:
            if r["seq"] != expected_seq or r["prev_hash"] not in stored:
                return Finding(r["seq"], "deleted", f"the row before it (seq {expected_seq - 1} .. {r['seq'] - 1}) "
                                                    "is missing from the chain")
            return Finding(r["seq"], "reordered", "it links to a row that is not the one before it")
        if r["seq"] != expected_seq:
            return Finding(r["seq"], "deleted", f"seq {expected_seq} is missing")
        if r["signer"] not in signers:
            return Finding(r["seq"], "unattested", "signed by a key with no attestation record")
        if not signers[r["signer"]]:
            return Finding(r["seq"], "unattested", "signed by a key whose evidence this release does not bless")
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(r["signer"])).verify(
                bytes.fromhex(r["signature"]), signed_message(r["row_hash"]))
        except (InvalidSignature, ValueError):
            return Finding(r["seq"], "unsigned", "its signature does not verify")
        prev, expected_seq = r["row_hash"], r["seq"] + 1
    return None


def appraise_signers(store: Store, verifier) -> dict[str, bool]:
    """Each signing key -> whether its evidence is node1's, blessed, and bound to that key. Old evidence
    is expected (the key signs for the process's life), so only freshness is not required."""
    from attestation.binding import LEDGER_SIGNER, report_data

    out = {}
    for public_key, evidence in store.rows("SELECT public_key, evidence FROM ledger_signers"):
        if verifier is None:
            out[public_key] = True
            continue
        verdict = verifier.check(json.loads(evidence), "node1",
                                 report_data(bytes.fromhex(public_key), b"", purpose=LEDGER_SIGNER))
        out[public_key] = all(c["ok"] for c in verdict["checks"] if c["name"] != "freshness")
    return out


def release_verifier(data_dir):
    from attestation.policy import load_policy
    from attestation.release_dir import release_public_key
    from attestation.verify import Verifier

    return Verifier(load_policy(data_dir / "policy.json", release_public_key(data_dir)))


def main(argv=None) -> int:
    from node1.config import ledger_settings

    ledger_url, data_dir = ledger_settings(os.environ)
    store = Store.open(ledger_url, data_dir)
    # --no-attestation: checks the chain and signatures only (a ledger without its release directory).
    try:
        verifier = None if "--no-attestation" in (argv or sys.argv[1:]) else release_verifier(data_dir)
    except Exception as exc:  # noqa: BLE001 - PolicyError and friends: say which file, and stop
        print(f"cannot appraise the ledger's signing keys without the release directory: {exc} "
              "(--no-attestation checks the chain and signatures alone)", file=sys.stderr)
        return 2
    rows = read_rows(store)
    finding = verify_chain(rows, appraise_signers(store, verifier))
    if finding:
        print(f"ledger verification FAILED at {finding}")
        return 1
    print(f"ledger verified: {len(rows)} rows, chain intact, every row signed by an attested node1 key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
