"""Command line for attestation: `measure` this checkout (or `--list` the files behind a role's
measurement), `verify` a TDX quote offline. Blessing a release is the owner's tool: `python -m release bless`."""
import argparse
import json
import sys
import time
from pathlib import Path

from attestation.errors import AttestationError
from attestation.evidence import ROLES
from attestation.measure import code_digest, role_files
from attestation.policy import default_tdx, load_policy
from attestation.release_dir import read_manifest, reference_measurements, release_public_key
from attestation.tdx import decode_quote, verify_quote

MAX_INPUT_BYTES = 4 << 20


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def cmd_measure(args) -> int:
    if args.list:
        # Exactly the files the role's code digest covers (and its image copies), one per line.
        print("\n".join(p.as_posix() for p in role_files(args.root, args.list)))
        return 0
    try:
        manifest_sha, body = read_manifest(args.data_dir)
    except AttestationError as e:
        # Without a prepared model only the code can be measured; say so rather than invent a manifest.
        _print({"manifest_sha256": None, "note": e.detail,
                "roles": {r: {"role": r, "components": {"code": code_digest(args.root, r)}} for r in ROLES}})
        return 0
    _print({"manifest_sha256": manifest_sha, "roles": reference_measurements(args.root, manifest_sha, body)})
    return 0


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise ValueError(f"{path} is larger than {MAX_INPUT_BYTES} bytes")
    return data


def _tdx_policy(args) -> dict:
    if args.policy is None:
        return default_tdx()
    pub = args.release_pub or args.policy.parent / "keys" / "release.pub"
    return load_policy(args.policy, release_public_key(pub)).tdx


def cmd_verify(args) -> int:
    try:
        quote = decode_quote(_read(args.quote))
        collateral = _read(args.collateral).decode()
        tdx = _tdx_policy(args)
        expected = bytes.fromhex(args.report_data) if args.report_data else None
    except (OSError, ValueError, AttestationError) as e:
        _print({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return 2
    at = int(time.time()) if args.at is None else int(args.at)
    verdict = verify_quote(quote, collateral, now=at, tdx_policy=tdx, expected_report_data=expected)
    _print(verdict)
    return 0 if verdict["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m attestation", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="print this checkout's reference measurements as JSON")
    m.add_argument("--root", type=Path, default=Path("."))
    m.add_argument("--data-dir", type=Path, default=Path("data"))
    m.add_argument("--list", choices=ROLES, default=None, help="print the files behind this role's measurement")
    m.set_defaults(func=cmd_measure)
    v = sub.add_parser("verify", help="appraise a TDX quote offline; exit 0 only if it passes")
    v.add_argument("--quote", type=Path, required=True, help="binary or (0x-)hex text quote")
    v.add_argument("--collateral", type=Path, required=True, help="dcap-qvl collateral JSON")
    v.add_argument("--at", type=float, default=None, help="UNIX time to verify at (default: now)")
    v.add_argument("--policy", type=Path, default=None, help="signed policy.json whose tdx section applies")
    v.add_argument("--release-pub", type=Path, default=None, help="release public key (default: beside the policy)")
    v.add_argument("--report-data", default=None, help="expected report_data as hex")
    v.set_defaults(func=cmd_verify)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AttestationError as e:
        _print({"ok": False, "failed": e.check, "error": e.detail})
        return 2


if __name__ == "__main__":
    sys.exit(main())
