"""Shared test configuration: the Scriptorium pytest plugin provides the fixtures."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SCRIPTORIUM_LOG_JSON", "false")
