"""Attestation for TwinTEE in RATS roles: attesters (providers), the verifier, policy and key release."""
