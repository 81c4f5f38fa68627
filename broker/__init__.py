"""The key broker: releases each node's shard key, HPKE-wrapped, only to that node's attested measurement."""
