"""node2's entry point for gunicorn: `gunicorn 'node2.wsgi:app_from_env()'`; reads the environment once."""
import logging
import os

from attestation.hardening import harden_process
from attestation.service import config_or_exit
from node2.app import create_app
from node2.config import Node2Config
from node2.step_socket import StepSocket
from shared.memory import return_freed_memory


def app_from_env():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    harden_process()  # before any key, weight or prompt is in this process's memory
    return_freed_memory()  # before request threads allocate
    config = config_or_exit(Node2Config.from_env, os.environ)
    app = create_app(config)
    if config.step_port:
        StepSocket(app.extensions["twintee"], config.host, config.step_port).start()
    return app
