"""`python -m release prepare|rotate|bless`: the owner's commands over a release directory.

prepare  converts, encrypts and signs the model the first time, and re-blesses this checkout afterwards
rotate   re-encrypts every shard under a new version's keys (--retire-old raises the minimum version)
bless    measures this checkout's roles and writes the signed policy, nothing else
"""
import argparse
import json
import os
from pathlib import Path

from attestation.manifest import manifest_path
from attestation.release_dir import POLICY_FILE
from release.bless import bless
from release.prepare import WEIGHT_FORMATS
from release.publish import ROOT, publish, rotate
from release.source import DEFAULT_SOURCE


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m release", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="prepare", choices=("prepare", "rotate", "bless"))
    ap.add_argument("--source", default=DEFAULT_SOURCE, help="'smollm2' or a local Hugging Face Llama-family directory")
    ap.add_argument("--split", type=int, default=None, help="first layer of node2 (default: half)")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    # The nodes' TWINTEE_DTYPE=q4_1 needs shards of the GGUF's own blocks; every other dtype reads float32 shards.
    ap.add_argument("--weights", choices=WEIGHT_FORMATS,
                    default="q4_1" if os.environ.get("TWINTEE_DTYPE") == "q4_1" else "float32",
                    help="prepare: float32 shards, or the GGUF's Q4_1/Q8_0 blocks (default: q4_1 when TWINTEE_DTYPE=q4_1)")
    ap.add_argument("--retire-old", action="store_true", help="rotate: raise the minimum version to the new one")
    ap.add_argument("--root", type=Path, default=ROOT, help="bless: the checkout to measure (default: this one)")
    args = ap.parse_args(argv)
    if args.command == "bless":
        policy = bless(args.root, args.data_dir)
        print(json.dumps({"policy": str(args.data_dir / POLICY_FILE), "allowed_tee_types": list(policy.allowed_tee_types),
                          "roles": {r: ref["measurement"] for r, ref in policy.roles.items()}}, indent=2, sort_keys=True))
        return
    if args.command == "rotate":
        body = rotate(args.data_dir, args.retire_old)
    elif manifest_path(args.data_dir).exists() and args.split is None and args.source == DEFAULT_SOURCE:
        # The model is released already: re-bless this checkout's measurements only.
        bless(ROOT, args.data_dir)
        body = json.loads(manifest_path(args.data_dir).read_bytes())["body"]
    else:
        body = publish(args.source, args.data_dir, args.split, weights=args.weights)
    print(json.dumps({"model_id": body["model_id"], "version": body["version"], "split_layer": body["split_layer"]}))


if __name__ == "__main__":
    main()
