"""Shared fixtures: a clean environment for every test, and a private MQTT broker."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker import Mosquitto, MosquittoMissingError

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove `LEAT_SCANNER_*` overrides and proxy settings so tests see defaults only."""
    for name in list(os.environ):
        if name.startswith("LEAT_SCANNER_") or name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`cli.main` points the root logger at the stderr pytest captured for that test: give
    later tests back the handlers and level they had (no 'Logging error' on a closed stream)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _mosquitto(workdir: Path, users: dict[str, str] | None = None) -> Mosquitto:
    try:
        return Mosquitto(workdir, users)
    except MosquittoMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running mosquitto of our own (anonymous, no persistence); always stopped after."""
    server = _mosquitto(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Like `broker`, with user `scanner` / password `s3cret-pw` in a password file."""
    server = _mosquitto(tmp_path, {"scanner": "s3cret-pw"})
    try:
        server.start()
        yield server
    finally:
        server.stop()
