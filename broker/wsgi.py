"""The key broker's entry point for gunicorn: `gunicorn 'broker.wsgi:app_from_env()'`.

Reads the environment once, pins the release key, and appraises evidence with the signed policy.
"""
import logging
import os

from werkzeug.middleware.proxy_fix import ProxyFix

from attestation.hardening import harden_process
from broker.app import create_app
from broker.config import BrokerConfig
from attestation.service import ConfigError, config_or_exit
from attestation.policy import load_policy
from attestation.release_dir import release_public_key
from attestation.verify import Verifier


def _read_config(env) -> BrokerConfig:
    config = BrokerConfig.from_env(env)
    if config.policy_path is None:
        raise ConfigError("TWINTEE_BROKER_POLICY is not set: the broker cannot appraise without reference values")
    return config


def app_from_env():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    harden_process()  # before any key, weight or prompt is in this process's memory
    config = config_or_exit(_read_config, os.environ)
    config.audit_log.parent.mkdir(parents=True, exist_ok=True)
    policy_path = config.policy_path

    def appraise(evidence: dict, role: str, report_data: bytes) -> dict:
        # Re-read per request: `make prepare` or a rotation re-blesses without restarting the broker.
        policy = load_policy(policy_path, release_public_key(config.data_dir))
        return Verifier(policy).appraise(evidence, role, report_data)

    def min_version_for(model_id: str) -> int:
        return load_policy(policy_path, release_public_key(config.data_dir)).min_model_version

    app = create_app(config, appraise=appraise, min_version_for=min_version_for)
    # Behind nginx (launcher/proxy.py) gunicorn's peer is a unix socket; the audit log names the client
    # nginx saw, which it sets in X-Forwarded-For (overwriting, so a client cannot choose it).
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)
    return app
