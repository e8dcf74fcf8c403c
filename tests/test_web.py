"""The technician page over HTTP against the real daemon on replayed frames (web_device.py):
health from the published state, the preview and its read state, save frame, the test scan,
and the security bounds (CSRF, login and its rate limit, Host names, sizes, slow clients)."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from broker import Mosquitto
from web_device import CARD, running_device, wait_until, web_config, write_frames

from appliance import cli
from appliance.config import Config, validate
from appliance.web import auth, server
from appliance.web.preview import LINGER_S

MASKED = "LC******WX"


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    return write_frames(tmp_path / "frames")


def password_file(tmp_path: Path, password: str = "correct horse") -> Path:
    path = tmp_path / "web-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def test_health_is_the_published_state(broker: Mosquitto, frames: Path, tmp_path: Path) -> None:
    with running_device(web_config(broker, frames, tmp_path / "state")) as dev, \
            httpx.Client(base_url=dev.url) as web:
        page = web.get("/")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback
        state = wait_until(lambda: web.get("/api/health").json()["state"])
        assert state["schema"] == "leat-scanner/state/1"
        assert state["device_id"] == "test-counter"
        health = web.get("/api/health").json()
        assert health["version"] and health["uptime_s"] >= 0
        assert health["state"]["timestamp"] == dev.service.last_state["timestamp"]  # type: ignore[index]


def test_preview_shows_the_card_read_masked_and_costs_nothing_unwatched(
    broker: Mosquitto, frames: Path, tmp_path: Path
) -> None:
    with running_device(web_config(broker, frames, tmp_path / "state")) as dev, \
            httpx.Client(base_url=dev.url) as web:
        web.get("/")
        assert dev.web.page is not None
        tap = dev.web.page.tap
        assert not tap.wanted  # nobody looks: the camera thread offers nothing
        aim = wait_until(lambda: (a := web.get("/api/aim").json())["state"] == "read" and a)
        assert aim["read"] == {"value": MASKED, "format": "QRCode"}
        assert aim["frame"]["size"] == [640, 360]
        assert aim["camera"]["autofocus"] == "continuous"
        assert aim["frame"]["exposure"] is None  # replayed frames: no sensor metadata
        assert tap.wanted
        jpeg = web.get("/preview.jpg")
        assert jpeg.headers["content-type"] == "image/jpeg"
        assert jpeg.content[:2] == b"\xff\xd8"
        recent = wait_until(lambda: web.get("/api/aim").json()["recent"])
        assert recent[0]["value"] == MASKED and recent[0]["outcome"] == "accepted"
        for path in ("/api/aim", "/api/health"):
            assert CARD not in web.get(path).text
        wait_until(lambda: not tap.wanted, timeout=LINGER_S + 3)  # the viewer left
        assert tap.latest() is None  # and no frame (it may show a card) is kept


def test_save_frame_and_test_scan_need_the_csrf_token(
    broker: Mosquitto, frames: Path, tmp_path: Path
) -> None:
    with running_device(web_config(broker, frames, tmp_path / "state")) as dev, \
            httpx.Client(base_url=dev.url) as web:
        web.get("/")
        csrf = web.get("/api/session").json()["csrf"]
        wait_until(lambda: web.get("/api/aim").json()["frame"])
        assert web.post("/api/save-frame").status_code == 403
        assert web.post("/api/save-frame", headers={"X-CSRF-Token": "x" * 43}).status_code == 403
        foreign = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert web.post("/api/save-frame", headers=foreign).status_code == 403
        saved = web.post("/api/save-frame", headers={"X-CSRF-Token": csrf})
        assert saved.status_code == 200
        path = Path(saved.json()["folder"]) / saved.json()["saved"]
        assert path.parent == tmp_path / "state" / "frames"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        buzzer = dev.pins.pin(22)
        buzzer.clear_states()
        played = web.post("/api/test-scan", content="signal=denied",
                          headers={"X-CSRF-Token": csrf})
        assert played.json() == {"played": "denied"}
        wait_until(lambda: [s.state for s in buzzer.states].count(True) >= 3)  # three beeps
        assert web.post("/api/test-scan", content="signal=rm",
                        headers={"X-CSRF-Token": csrf}).status_code == 400


def test_without_a_password_only_loopback_names_are_answered(
    broker: Mosquitto, frames: Path, tmp_path: Path
) -> None:
    with running_device(web_config(broker, frames, tmp_path / "state")) as dev, \
            httpx.Client(base_url=dev.url) as web:
        rebound = web.get("/", headers={"Host": "attacker.example:8088"})
        assert rebound.status_code == 403
        assert web.request("PUT", "/").headers["content-security-policy"] == server.CSP
        assert "set-cookie" not in rebound.headers
        assert web.get("/", headers={"Host": "localhost:8088"}).status_code == 200


def test_login_refuses_a_wrong_password_and_limits_attempts(
    broker: Mosquitto, frames: Path, tmp_path: Path
) -> None:
    cfg = web_config(broker, frames, tmp_path / "state",
                     password_file=str(password_file(tmp_path)))
    with running_device(cfg) as dev, httpx.Client(base_url=dev.url) as web:
        assert web.get("/").headers["location"] == "/login"
        assert web.get("/api/health").status_code == 401
        assert web.get("/preview.jpg").status_code == 401
        wrong = web.post("/login", data={"password": "wrong"})
        assert wrong.headers["location"] == "/login?refused=password"
        assert "set-cookie" not in wrong.headers
        right = web.post("/login", data={"password": "correct horse"})
        assert right.headers["location"] == "/"
        assert web.get("/api/health").status_code == 200
        web.cookies.clear()
        for _ in range(auth.FAILURES_PER_CLIENT):  # (the login above reset the count)
            web.post("/login", data={"password": "guess"})
        limited = web.post("/login", data={"password": "correct horse"})
        assert limited.headers["location"] == "/login?refused=wait"  # not even checked
        assert int(limited.headers["retry-after"]) > 0
        assert web.get("/api/health").status_code == 401


def test_requests_are_bounded_in_size_time_and_number(
    broker: Mosquitto, frames: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server._Handler, "timeout", 0.5)
    cfg = web_config(broker, frames, tmp_path / "state", max_viewers=1)
    with running_device(cfg) as dev, httpx.Client(base_url=dev.url) as web:
        web.get("/")
        big = web.post("/api/save-frame", content=b"x" * (server.MAX_BODY + 1))
        assert big.status_code == 413
        assert web.get("/api/aim").status_code == 200
        with httpx.Client(base_url=dev.url) as second:
            second.get("/")
            assert second.get("/api/aim").status_code == 503  # max_viewers = 1
        host, port = dev.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(server.MAX_CONNECTIONS)]
        try:
            for sock in idle:
                sock.sendall(b"GET / HTTP/1.1\r\n")  # ...and never the rest
            extra = socket.create_connection((host, int(port)))
            extra.settimeout(5)
            assert extra.recv(1) == b""  # over the cap: closed at once
            extra.close()
            for sock in idle:  # each slow client is dropped after the read timeout
                sock.settimeout(5)
                assert sock.recv(1024) == b""
            assert web.get("/api/health").status_code == 200
        finally:
            for sock in idle:
                sock.close()


def test_snapshot_asks_the_running_daemon(
    broker: Mosquitto, frames: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = web_config(broker, frames, tmp_path / "state")
    config_file = write_toml(tmp_path, cfg)
    with running_device(cfg):
        assert cli.main(["snapshot", "--config", str(config_file)]) == 0
    saved = Path(capsys.readouterr().out.strip())
    assert saved.parent == tmp_path / "state" / "frames" and saved.is_file()
    assert not (tmp_path / "state" / "snapshot.sock").exists()  # removed at stop


def test_snapshot_without_a_daemon_reads_the_camera(
    broker: Mosquitto, frames: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write_toml(tmp_path, web_config(broker, frames, tmp_path / "state"))
    assert cli.main(["snapshot", "--config", str(config_file)]) == 0
    saved = Path(capsys.readouterr().out.strip())
    assert saved.is_file() and saved.parent == tmp_path / "state" / "frames"


def test_tls_when_a_certificate_exists(broker: Mosquitto, frames: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    cfg = web_config(broker, frames, tmp_path / "state", cert_file=str(cert), key_file=str(key))
    with running_device(cfg) as dev:
        assert dev.url.startswith("https://")
        with httpx.Client(base_url=dev.url, verify=False) as web:
            page = web.get("/")
            assert page.status_code == 200
            assert "Secure" in page.headers["set-cookie"]
        with pytest.raises(httpx.HTTPError), httpx.Client(base_url=dev.url) as unverified:
            unverified.get("/")


def test_the_page_stays_on_loopback_unless_lan_with_a_password(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not loopback"):
        Config.model_validate({"web": {"host": "0.0.0.0"}})
    lan = Config.model_validate({"web": {"host": "0.0.0.0", "lan": True}})
    assert any("needs a password" in p for p in validate(lan, environ={}).problems)
    ok = Config.model_validate({"web": {"host": "0.0.0.0", "lan": True,
                                        "password_file": str(password_file(tmp_path))}})
    assert not [p for p in validate(ok, environ={}).problems if p.startswith("web")]
    assert validate(ok, environ={}).secrets["web-password"]
    assert any("unencrypted" in w for w in validate(ok, environ={}).warnings)  # no cert


def write_toml(tmp_path: Path, cfg: Config) -> Path:
    """`cfg` as a config file for the CLI (`None`s left out: TOML has no null)."""
    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not None}
        return value

    data = strip(cfg.model_dump(mode="json"))
    lines = []
    for section, values in data.items():  # type: ignore[union-attr]
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict):
                continue  # nested tables (mqtt.tls): defaults are fine here
            lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path

