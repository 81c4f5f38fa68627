"""TwinTEE's Python client: verify both nodes' attestation, then chat over requests sealed to node1."""
