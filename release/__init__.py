"""The model owner's offline tooling: convert and encrypt the shards, sign the manifest, bless the
reference measurements, rotate versions. It holds the owner's signing key and the broker's master
key, so it runs on the owner's machine, never inside a node or the broker (no image copies it)."""
