"""`python -m client chat`: verify both nodes, print the verdicts, then chat with sealed requests.
`python -m client verify-signature`: check that the attested node1 signed a saved request and response."""
import argparse
import os
import sys
from pathlib import Path

import requests

from attestation.errors import AttestationError
from client.attest import VerificationFailed, attest, pinned_policy, require_verified
from client.chat import Chat, ChatError
from client.sealed import SealedStreamError
from client.verify_signature import SignatureVerdict, sha256_hex, verify_signature

INSECURE_BANNER = ("!!! INSECURE: --insecure-plain skips attestation AND encryption. The host, every proxy and\n"
                   "!!! every log between you and node1 can read your prompts and replies. Never use it for real data.")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m client", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    chat = sub.add_parser("chat", help="verify both nodes, then chat")
    chat.add_argument("--url", default="http://127.0.0.1:5002", help="node1's public URL")
    chat.add_argument("--release-dir", type=Path, default=Path("data"),
                      help="holds keys/release.pub, the pinned release key (and policy.json, if present)")
    chat.add_argument("--insecure-plain", action="store_true", help="skip verification and encryption (unsafe)")
    chat.add_argument("--prompt", help="send one prompt and exit instead of reading lines")
    chat.add_argument("--temperature", type=float, default=0.0)
    chat.add_argument("--max-tokens", type=int, default=128)
    check = sub.add_parser("verify-signature", help="check node1's signature over a saved request and response")
    check.add_argument("--url", default="http://127.0.0.1:5002", help="node1's public URL")
    check.add_argument("--id", required=True, help="the completion's id (its response's `id`)")
    check.add_argument("--request", type=Path, required=True, help="the exact request body bytes sent")
    check.add_argument("--response", type=Path, required=True, help="the exact response bytes (a stream's SSE bytes)")
    check.add_argument("--release-dir", type=Path, default=Path("data"),
                       help="holds keys/release.pub, the pinned release key (and policy.json, if present)")
    chat.add_argument("--api-key-file", type=Path, default=None,
                      help="your API key (default: $TWINTEE_API_KEY, else <release-dir>/dev-api-key from make run)")
    return p.parse_args(argv)


def api_key(args, env) -> str | None:
    """The key sent with each turn (inside the seal): --api-key-file, $TWINTEE_API_KEY, or make run's dev key."""
    if args.api_key_file is not None:
        return args.api_key_file.read_text().strip()
    if env.get("TWINTEE_API_KEY"):
        return env["TWINTEE_API_KEY"].strip()
    dev = args.release_dir / "dev-api-key"
    return dev.read_text().strip() if dev.exists() else None


def red(text: str, stream) -> str:
    return f"\033[31m{text}\033[0m" if stream.isatty() else text


def print_reports(reports: dict, pinned, out) -> None:
    print(f"policy: signature OK with the pinned release key {pinned.release_key.hex()[:16]}… ({pinned.source})", file=out)
    for role in ("node1", "node2"):
        rep = reports[role]
        v = rep.verdict
        status = "VERIFIED" if rep.ok else red(f"FAILED ({v['failed']})", out)
        age = f"{v['age_s']:.1f}s" if isinstance(v.get("age_s"), (int, float)) else "?"
        print(f"{role}: {status}  tee={v.get('tee_type')}  measurement={str(v.get('measurement'))[:16]}…  "
              f"model={rep.model.get('model_id')} v{rep.model.get('version')}  layers={rep.model.get('layers')}  "
              f"evidence age={age}", file=out)
        for c in v["checks"]:
            mark = "ok  " if c["ok"] else red("FAIL", out)
            print(f"  [{mark}] {c['name']}: {c['detail']}", file=out)
    peer = reports.get("node1_verdict_on_node2") or {}
    print(f"node1's own verdict on node2: {'ok' if peer.get('ok') else 'not ok'}", file=out)
    if any(reports[r].verdict.get("tee_type") == "simulated" for r in ("node1", "node2")):
        print("note: SIMULATED TEE - the flow is real, the hardware protection is not.", file=out)


def verified_key(http, args, pinned, out, verbose: bool) -> bytes:
    reports = attest(http, args.url.rstrip("/"), pinned)
    failed = not (reports["node1"].ok and reports["node2"].ok)
    if verbose or failed:
        print_reports(reports, pinned, out)
    return require_verified(reports)


def read_lines(lines, out):
    """Prompts from `lines`, one a line, showing a `you> ` prompt when a person is typing."""
    interactive = lines.isatty() if hasattr(lines, "isatty") else False
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = lines.readline()
        if not line:
            return
        yield line.rstrip("\n")


def run_chat(args, out=sys.stdout, err=sys.stderr, lines=sys.stdin) -> int:
    http = requests.Session()
    chat = Chat(http, args.url, temperature=args.temperature, max_tokens=args.max_tokens,
                api_key=api_key(args, os.environ))
    pinned = None
    if args.insecure_plain:
        print(INSECURE_BANNER, file=err)
    else:
        pinned = pinned_policy(args.release_dir, http, args.url.rstrip("/"))
    prompts = [args.prompt] if args.prompt is not None else read_lines(lines, out)
    for turn, prompt in enumerate(prompts):
        if not prompt.strip():
            continue
        # Attest before every turn: a fresh nonce each time, and a restarted node1 has a new key.
        key = None if pinned is None else verified_key(http, args, pinned, out, verbose=turn == 0)
        out.write("assistant> ")
        chat.turn(prompt, key, lambda piece: (out.write(piece), out.flush()))
        out.write("\n")
        out.flush()
    return 0


def print_verdict(v: SignatureVerdict, out) -> None:
    for c in v.checks:
        print(f"  [{'ok  ' if c.ok else red('FAIL', out)}] {c.name}: {c.detail}", file=out)
    for label, rep in (("node1 (the signing key's evidence)", v.signing), ("node2 (for information)", v.node2)):
        if rep is not None:
            verdict = rep.verdict
            status = "VERIFIED" if rep.ok else red(f"FAILED ({verdict['failed']})", out)
            passed = ", ".join(c["name"] for c in verdict["checks"] if c["ok"])
            print(f"{label}: {status}  tee={verdict.get('tee_type')}  "
                  f"measurement={str(verdict.get('measurement'))[:16]}…  checks: {passed}", file=out)
    if v.signing is not None and v.signing.verdict.get("tee_type") == "simulated":
        print("note: SIMULATED TEE - the flow is real, the hardware protection is not.", file=out)
    if v.ok:
        print("VERIFIED: the attested node1 signed exactly this response to exactly this request", file=out)
    else:
        print(red(f"NOT VERIFIED: {v.failed.name}: {v.failed.detail}", out), file=out)


def run_verify_signature(args, out=sys.stdout) -> int:
    request_bytes, response_bytes = args.request.read_bytes(), args.response.read_bytes()
    for label, path, data in (("request", args.request, request_bytes), ("response", args.response, response_bytes)):
        print(f"{label}: {path} ({len(data)} bytes, sha256 {sha256_hex(data)})", file=out)
    http, url = requests.Session(), args.url.rstrip("/")
    verdict = verify_signature(http, url, args.id, request_bytes, response_bytes,
                               pinned_policy(args.release_dir, http, url))
    print_verdict(verdict, out)
    return 0 if verdict.ok else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "verify-signature":
        try:
            return run_verify_signature(args)
        except (AttestationError, OSError) as exc:  # the pinned release, or a file that cannot be read
            print(red(f"NOT VERIFIED: {exc}", sys.stderr), file=sys.stderr)
            return 1
    try:
        return run_chat(args)
    except (VerificationFailed, AttestationError) as exc:  # a node's evidence, or the policy and pinned key
        print(red(f"refusing to send: {exc}", sys.stderr), file=sys.stderr)
        return 2
    except (ChatError, SealedStreamError, requests.RequestException) as exc:
        print(red(f"error: {exc}", sys.stderr), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
