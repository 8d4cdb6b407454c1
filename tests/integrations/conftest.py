"""Shared setup of the integration tests: offline hub, the ``verl`` marker."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "verl: builds a separate virtual environment with verl (slow, needs the registry)")
