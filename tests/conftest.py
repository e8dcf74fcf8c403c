"""Shared fixtures: a clean environment for every test, and a private MQTT broker."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from broker import Mosquitto, MosquittoMissingError
from fakes import SHOP, Clock

from appliance import config
from appliance.forwarder import Forwarder
from appliance.leat.client import LeatClient
from appliance.outbox import Outbox
from appliance.sandbox.server import LeatSandbox

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Remove `LEAT_SCANNER_*` overrides and proxy settings so tests see defaults only, and
    never this machine's systemd credential store (`check` looks there)."""
    for name in list(os.environ):
        if name.startswith("LEAT_SCANNER_") or name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setattr(config, "CREDENTIAL_STORES", (tmp_path / "no-credstore",))


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


# -- Leat and the outbox, for the forwarder and command tests (a module may override any) -----


@pytest.fixture
def sandbox() -> Iterator[LeatSandbox]:
    """The Leat sandbox on a free loopback port, seeded with the demo data."""
    with LeatSandbox() as server:
        yield server


@pytest.fixture
def client(sandbox: LeatSandbox) -> Iterator[LeatClient]:
    """A LeatClient on `sandbox` with its personal access token."""
    with LeatClient(
        sandbox.url, token=sandbox.personal_access_token, shop_uuid=SHOP, timeout_s=5.0
    ) as leat:
        yield leat


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the test's outbox file goes."""
    return tmp_path / "outbox.sqlite"


@pytest.fixture
def outbox(path: Path, clock: Clock) -> Iterator[Outbox]:
    with Outbox(path, clock=clock) as box:
        yield box


@pytest.fixture
def forwarder(
    path: Path, client: LeatClient, events: Callable[..., None], clock: Clock
) -> Forwarder:
    """A forwarder of the test's outbox to `sandbox`, publishing to the module's `events`."""
    return Forwarder(
        path, client, events, device_id="till-1", shop_uuid=SHOP, clock=clock, rng=random.Random(7)
    )
