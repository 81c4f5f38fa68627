"""The broker's command line: verify-audit PATH, init-master-key PATH."""
import argparse
import json
import sys
from pathlib import Path

from broker.audit import verify_chain
from broker.kms import create_master_key


def _verify_audit(path: Path) -> int:
    try:
        ok, entries, first_bad = verify_chain(path)
    except OSError as e:
        print(json.dumps({"ok": False, "error": f"cannot read {path}: {e.strerror}"}))
        return 2
    released = sum(1 for e in entries if e.get("verdict") == "released")
    print(json.dumps({"ok": ok, "entries": len(entries), "released": released,
                      "refused": len(entries) - released, "first_bad_seq": first_bad,
                      "head": entries[-1]["hash"] if entries else None}, sort_keys=True))
    return 0 if ok else 1


def _init_master_key(path: Path) -> int:
    try:
        create_master_key(path)
    except FileExistsError:
        print(json.dumps({"ok": False, "error": f"{path} exists; refusing to overwrite a key"}))
        return 1
    except OSError as e:
        print(json.dumps({"ok": False, "error": f"cannot create {path}: {e.strerror}"}))
        return 2
    print(json.dumps({"ok": True, "created": str(path), "mode": "0600"}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify-audit", help="exit 0 iff the audit hash chain is intact")
    verify.add_argument("path", type=Path)
    init = commands.add_parser("init-master-key", help="create a new 0600 master key file")
    init.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "verify-audit":
        return _verify_audit(args.path)
    return _init_master_key(args.path)


if __name__ == "__main__":
    sys.exit(main())
