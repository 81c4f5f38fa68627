"""`make operators FROM=YYYY-MM-DD TO=YYYY-MM-DD`: node-operator accounting from the usage ledger (TeeTee's
contribution pool, off-chain). Each node is credited, by its attested identity, with the layer-tokens it
computed: every prompt and completion token passes through each of its decoder layers once."""
import argparse
import os
import sys
from collections import defaultdict
from datetime import date

from node1.store import Store


def shares(store: Store, first: str, last: str) -> list[dict]:
    """Each node identity's layer-tokens over UTC days first..last (inclusive) and its share of them all.
    node1 is named by its measurement and ledger signing key (attested: ledger_signers), node2 by the
    measurement node1 appraised in their handshake."""
    credit: dict[tuple, int] = defaultdict(int)
    rows = store.rows("SELECT node1, signer, node2, layers1, layers2, SUM(prompt_tokens + completion_tokens) "
                      "FROM ledger WHERE day >= ? AND day <= ? GROUP BY node1, signer, node2, layers1, layers2",
                      (first, last))
    for node1, signer, node2, layers1, layers2, tokens in rows:
        credit[("node1", node1, signer)] += int(tokens) * int(layers1)
        credit[("node2", node2, "")] += int(tokens) * int(layers2)
    total = sum(credit.values()) or 1
    return [{"role": role, "measurement": m, "key": k, "layer_tokens": v, "share": v / total}
            for (role, m, k), v in sorted(credit.items(), key=lambda kv: -kv[1])]


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD date") from None


def main(argv=None) -> int:
    from node1.config import ledger_settings

    parser = argparse.ArgumentParser(prog="python -m node1.operators")
    parser.add_argument("--from", dest="first", type=_day, required=True)
    parser.add_argument("--to", dest="last", type=_day, required=True)
    args = parser.parse_args(argv)
    ledger_url, data_dir = ledger_settings(os.environ)
    rows = shares(Store.open(ledger_url, data_dir), args.first, args.last)
    print(f"layer-tokens computed {args.first} .. {args.last} (UTC), by node identity:")
    for r in rows:
        key = f" key {r['key'][:16]}" if r["key"] else ""
        print(f"{r['role']} measurement {r['measurement'][:16]}{key}: {r['layer_tokens']} ({r['share']:.1%})")
    if not rows:
        print("no usage in that period")
    return 0


if __name__ == "__main__":
    sys.exit(main())
