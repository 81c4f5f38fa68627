"""A node's attested identity: what it measures as, how it proves it, and how it appraises peers."""
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation.binding import CLIENT_ATTESTATION, report_data
from attestation.measure import measure_node
from attestation.policy import Policy, load_policy
from attestation.providers import make_attester
from attestation.release_dir import release_public_key, security_config
from attestation.verify import Verifier
from shared.config import TeeSettings
from shared.loading import Release


def raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass
class Identity:
    role: str
    measurement: dict
    policy: Policy
    attester: object
    verifier: Verifier
    # The key this process attests to clients (node1: the HPKE key requests are sealed to).
    key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)

    @property
    def public_key(self) -> bytes:
        return raw_public(self.key)

    def evidence(self, data: bytes) -> dict:
        return self.attester.evidence(data)

    def appraise(self, evidence: dict, role: str, data: bytes) -> dict:
        return self.verifier.appraise(evidence, role, data)

    def evidence_for_nonce(self, nonce: bytes) -> dict:
        """Fresh evidence binding this process's public key to a challenger's nonce."""
        return {
            "role": self.role,
            "public_key": self.public_key.hex(),
            "nonce": nonce.hex(),
            "measurement": self.measurement,
            "evidence": self.evidence(report_data(self.public_key, nonce, purpose=CLIENT_ATTESTATION)),
        }


def node_identity(role: str, tee: TeeSettings, release: Release) -> Identity:
    manifest_sha = hashlib.sha256((release.model_dir / "manifest.json").read_bytes()).hexdigest()
    # The same security config `make prepare` blessed, so the two can only differ by a real change.
    measurement = measure_node(tee.project_root, role, manifest_sha, security_config(role, release.manifest))
    # The release key is pinned from the release directory; in a real deployment it is part of the
    # measured image, so a host cannot swap it.
    policy = load_policy(tee.data_dir / "policy.json", release_public_key(tee.data_dir))
    attester = make_attester(tee.kind, role=role, measurement=measurement, sim_dir=tee.data_dir / "simulated-tee")
    return Identity(role, measurement, policy, attester, Verifier(policy))




def open_release(role: str, tee: TeeSettings, on_wait=None):
    """-> (release, identity, open_shard): the signed release, this node's identity, and its shard opener.

    A manifest older than the policy's minimum version is refused here (anti-rollback).
    """
    from shared.loading import read_release
    from attestation.manifest import ManifestError
    from shared.shard_access import broker_opener

    release = read_release(tee.data_dir)
    identity = node_identity(role, tee, release)
    minimum = identity.policy.min_model_version
    if release.manifest["version"] < minimum:
        raise ManifestError("rollback", f"model version {release.manifest['version']} is below the policy's minimum {minimum}")
    return release, identity, broker_opener(tee.broker_url, role, release, identity.evidence, on_wait)
