"""Enrolment codes: made by `enrol-code`, read by the real scan path (replayed frames, real
Mosquitto), checked (device, single use, expiry after clock sync), installed by
`provision secrets` as root-only credentials."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from broker import Mosquitto, Subscriber
from gpiozero.pins.mock import MockFactory
from PIL import Image
from test_daemon import BASE, make_config, payloads

from appliance import cli
from appliance.assembly import build
from appliance.config import DecodeConfig
from appliance.decode import Decoder
from appliance.enrol import (
    PREFIX,
    EnrolError,
    Enroller,
    Enrolment,
    SpoolStore,
    UsedCodes,
    make_code,
    new_fleet_key,
    open_code,
    read_fleet_key,
)
from appliance.enrol_tools import install_credentials, install_spool
from appliance.feedback import Feedback, Signal
from appliance.replay import ReplaySource
from appliance.samples import DEMO_CODES, background, place, render_code

DEVICE = "test-counter"
TOKEN = "pat-0123456789abcdef-secret"


@pytest.fixture
def key() -> bytes:
    return read_fleet_key(new_fleet_key())


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


class Stored:
    def __init__(self) -> None:
        self.enrolments: list[Enrolment] = []

    def __call__(self, enrolment: Enrolment) -> None:
        self.enrolments.append(enrolment)


def enroller(key: bytes | None, tmp_path: Path, *, synced: bool, now: float) -> tuple[
    Enroller, Stored
]:
    stored = Stored()
    return Enroller(DEVICE, key, UsedCodes(tmp_path / "used"), stored,
                    synchronised=lambda: synced, clock=lambda: now), stored


def test_code_round_trips_and_is_bound_to_device_and_key(key: bytes) -> None:
    code = make_code(key, DEVICE, {"leat-token": TOKEN}, ttl_s=600, now=1000.0)
    assert code.startswith(PREFIX) and len(code) <= 512
    assert TOKEN not in code
    opened = open_code(key, DEVICE, code)
    assert opened.values == {"leat-token": TOKEN} and opened.expires == 1600
    with pytest.raises(EnrolError, match="another device"):
        open_code(key, "other-counter", code)
    with pytest.raises(EnrolError, match="another device or another fleet key"):
        open_code(read_fleet_key(new_fleet_key()), DEVICE, code)
    tampered = code[:-3] + ("A" if code[-3] != "A" else "B") + code[-2:]
    with pytest.raises(EnrolError):
        open_code(key, DEVICE, tampered)
    # two codes for the same secrets differ (random nonce and id)
    assert make_code(key, DEVICE, {"leat-token": TOKEN}, ttl_s=600, now=1000.0) != code


def test_make_code_refuses_what_the_device_could_not_read(key: bytes) -> None:
    with pytest.raises(EnrolError, match="provision secrets"):
        make_code(key, DEVICE, {"leat-token": "x" * 600}, ttl_s=600)
    with pytest.raises(EnrolError, match="not a credential"):
        make_code(key, DEVICE, {"mqtt-password": "x"}, ttl_s=600)
    with pytest.raises(EnrolError, match="control characters"):
        make_code(key, DEVICE, {"leat-token": "a\nb"}, ttl_s=600)
    with pytest.raises(EnrolError, match="--ttl"):
        make_code(key, DEVICE, {"leat-token": TOKEN}, ttl_s=3 * 24 * 3600)


def test_single_use_is_remembered_across_restarts(key: bytes, tmp_path: Path) -> None:
    code = make_code(key, DEVICE, {"leat-token": TOKEN}, ttl_s=600, now=1000.0)
    first, stored = enroller(key, tmp_path, synced=True, now=1100.0)
    assert first.intercept(code) is Signal.ACCEPTED
    assert [e.values for e in stored.enrolments] == [{"leat-token": TOKEN}]
    again, stored_again = enroller(key, tmp_path, synced=True, now=1100.0)  # a restart
    assert again.intercept(code) is Signal.DENIED
    assert stored_again.enrolments == []
    assert stat.S_IMODE((tmp_path / "used").stat().st_mode) == 0o600


def test_expiry_is_checked_only_once_the_clock_is_synchronised(
    key: bytes, tmp_path: Path
) -> None:
    code = make_code(key, DEVICE, {"leat-token": TOKEN}, ttl_s=600, now=1000.0)
    late, stored = enroller(key, tmp_path / "a", synced=True, now=1601.0)
    assert late.intercept(code) is Signal.DENIED and stored.enrolments == []
    # an unsynchronised Pi (no RTC) may believe it is 1970 or years ahead: not trusted
    unsynced, stored = enroller(key, tmp_path / "b", synced=False, now=99_999_999.0)
    assert unsynced.intercept(code) is Signal.ACCEPTED and len(stored.enrolments) == 1


def test_ordinary_scans_pass_and_a_device_without_key_refuses(
    key: bytes, tmp_path: Path
) -> None:
    keyless, stored = enroller(None, tmp_path, synced=True, now=0.0)
    assert keyless.intercept(DEMO_CODES["loyalty_card"]) is None
    code = make_code(key, DEVICE, {"leat-token": TOKEN}, ttl_s=600, now=0.0)
    assert keyless.intercept(code) is Signal.DENIED and stored.enrolments == []
    assert keyless.intercept(PREFIX + "garbage!") is Signal.DENIED


def test_enrol_code_cli_writes_a_qr_the_decoder_reads(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.key"
    assert cli.main(["enrol-code", "--fleet-key", str(fleet), "--new-fleet-key"]) == 0
    assert stat.S_IMODE(fleet.stat().st_mode) == 0o600
    assert cli.main(["enrol-code", "--fleet-key", str(fleet), "--new-fleet-key"]) == 2
    token = secret_file(tmp_path / "token", TOKEN)
    png = tmp_path / "code.png"
    assert cli.main(["enrol-code", "--fleet-key", str(fleet), "--device", DEVICE,
                     "--token-file", str(token), "--ttl", "5m", "--png", str(png)]) == 0
    frame = ReplaySource([png], fps=0).read()
    scans = Decoder(DecodeConfig()).decode(frame).scans
    assert len(scans) == 1 and scans[0].text.startswith(PREFIX)
    opened = open_code(read_fleet_key(fleet.read_text()), DEVICE, scans[0].text)
    assert opened.values == {"leat-token": TOKEN}
    token.chmod(0o644)
    assert cli.main(["enrol-code", "--fleet-key", str(fleet), "--device", DEVICE,
                     "--token-file", str(token), "--png", str(png)]) == 2


def test_daemon_never_publishes_an_enrolment_code_and_spools_its_secrets(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: bytes
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "enrol-key").write_text(new_fleet_key_for(key))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setattr("appliance.enrol.clock_synchronised", lambda: True)
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(7)
    code = make_code(key, "test-counter", {"leat-token": TOKEN}, ttl_s=600)
    shown = [("1-empty", background((640, 480), rng)),
             ("2-enrol", place(render_code(code, module_px=4), background((640, 480), rng), rng)),
             ("3-empty", background((640, 480), rng)),
             ("4-card", place(render_code(DEMO_CODES["loyalty_card"], module_px=8),
                              background((640, 480), rng), rng))]
    for name, pixels in shown:
        Image.fromarray(pixels).save(frames / f"{name}.png")
    cfg = make_config(broker, frames)
    signals: list[Signal] = []
    feedback = Feedback.from_config(cfg.feedback, MockFactory())
    show = feedback.show

    def record(signal: Signal) -> None:
        signals.append(signal)
        show(signal)

    monkeypatch.setattr(feedback, "show", record)
    with Subscriber(broker, f"{BASE}/#") as sub:
        sub.wait_subscribed()
        service = build(cfg, feedback=feedback)
        assert service.run(threading.Event()) == 0
        messages = sub.wait_for(lambda ms: "offline" in payloads(list(ms), "availability"))
    everything = b"".join(m.payload for m in messages)
    assert PREFIX.encode() not in everything and TOKEN.encode() not in everything
    scans = payloads(messages, "events/scan")
    assert [s["value"] for s in scans] == [DEMO_CODES["loyalty_card"]]
    assert Signal.ACCEPTED in signals
    spooled = list((cfg.device.state_dir / "enrol").glob("*.json"))
    assert len(spooled) == 1 and json.loads(spooled[0].read_text()) == {"leat-token": TOKEN}
    assert stat.S_IMODE(spooled[0].stat().st_mode) == 0o600
    # root's side: the path unit's `provision secrets --from-spool`
    store = tmp_path / "credstore"
    assert install_spool(cfg.device.state_dir / "enrol", store, owner=False) == ["leat-token"]
    assert (store / "leat-scanner.leat-token").read_text() == TOKEN + "\n"
    assert list((cfg.device.state_dir / "enrol").glob("*.json")) == []


def new_fleet_key_for(key: bytes) -> str:
    import base64

    return base64.b64encode(key).decode() + "\n"


def test_spool_store_and_install_are_root_only_0600(key: bytes, tmp_path: Path) -> None:
    spool = SpoolStore(tmp_path / "spool")
    spool(Enrolment("a" * 16, 0, {"leat-token": TOKEN}))
    (tmp_path / "spool" / "bad.json").write_text('{"mqtt-password": "x"}')
    store = tmp_path / "credstore"
    owner = os.geteuid() == 0
    assert install_spool(tmp_path / "spool", store, owner=owner) == ["leat-token"]
    target = store / "leat-scanner.leat-token"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    if owner:
        assert (target.stat().st_uid, target.stat().st_gid) == (0, 0)
    assert list((tmp_path / "spool").iterdir()) == []  # the bad file is dropped, not kept
    assert install_credentials({"leat-token": TOKEN}, store, owner=owner) == []  # idempotent


def test_provision_secrets_reads_files_and_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "credstore"
    token = secret_file(tmp_path / "token", TOKEN)
    monkeypatch.setattr(sys, "stdin", _Stdin("acct-secret\n"))
    fleet = new_fleet_key()
    key_file = secret_file(tmp_path / "fleet", fleet)
    argv = ["provision", "secrets", "--credstore", str(store), "--leat-token-file", str(token),
            "--account-secret-file", "-", "--enrol-key-file", str(key_file)]
    assert cli.main(argv) == 0
    assert (store / "leat-scanner.leat-account-secret").read_text() == "acct-secret\n"
    assert (store / "leat-scanner.enrol-key").read_text() == fleet + "\n"
    assert "installed" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", _Stdin("acct-secret\n"))
    assert cli.main(argv) == 0
    assert "nothing to change" in capsys.readouterr().out
    password = secret_file(tmp_path / "web", "counter-2026")  # the technician page on the LAN
    assert cli.main(["provision", "secrets", "--credstore", str(store),
                     "--web-password-file", str(password)]) == 0
    assert (store / "leat-scanner.web-password").read_text() == "counter-2026\n"
    assert (store / "leat-scanner.web-password").stat().st_mode & 0o777 == 0o600
    bad_key = secret_file(tmp_path / "bad", "not a key")
    assert cli.main(["provision", "secrets", "--credstore", str(store),
                     "--enrol-key-file", str(bad_key)]) == 2
    assert cli.main(["provision", "secrets", "--credstore", str(store)]) == 2


class _Stdin:
    def __init__(self, text: str) -> None:
        self._text = text

    def read(self, size: int = -1) -> str:
        return self._text
