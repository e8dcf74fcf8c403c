"""The `leat-scanner` command: decode, check, demo, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zxingcpp
from PIL import Image

from appliance.cli import main
from appliance.samples import DEMO_CODES, render_code, write_demo_frames


def test_cli_decode_json_names_each_file_and_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_demo_frames(tmp_path)
    assert main(["decode", "--json", *map(str, paths)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(p) for p in paths]
    by_file = {Path(line["file"]).name: line["scans"] for line in lines}
    assert by_file["000-empty.png"] == []
    [card] = by_file["001-loyalty-card.png"]
    assert card == {"text": DEMO_CODES["loyalty_card"], "format": "QRCode", "kind": "loyalty_card"}
    kinds = {scan["kind"] for scans in by_file.values() for scan in scans}
    assert kinds == {"loyalty_card", "giftcard", "voucher", "loyalty_token"}


def test_cli_decode_text_output_and_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_demo_frames(tmp_path / "frames")
    broken = tmp_path / "broken.png"
    broken.write_text("not an image", encoding="utf-8")
    assert main(["decode", str(paths[1]), str(broken)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{paths[1]}: loyalty_card QRCode {DEMO_CODES['loyalty_card']!r}"
    assert out[1].startswith(f"{broken}: error:")


def save_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def test_cli_decode_reads_every_image_of_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_demo_frames(tmp_path / "frames")
    (tmp_path / "frames" / "notes.txt").write_text("not an image", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    assert main(["decode", "--json", str(tmp_path / "frames"), str(tmp_path / "empty")]) == 1
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["file"] for line in lines] == [*map(str, paths), str(tmp_path / "empty")]
    assert "folder has no .png" in lines[-1]["error"]
    assert "replaying" not in captured.err  # no log line per image


def test_cli_decode_reads_micro_qr_and_says_the_device_ignores_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = save_png(tmp_path / "micro.png", render_code("LC-123456", "MicroQRCode"))
    assert main(["decode", str(image)]) == 0
    out = capsys.readouterr().out
    assert out == (f"{image}: loyalty_card MicroQRCode 'LC-123456' "
                   f"(the device does not read MicroQRCode (decode.formats))\n")
    config_file = tmp_path / "config.toml"
    config_file.write_text('[decode]\nformats = ["QRCode", "MicroQRCode"]\n', encoding="utf-8")
    assert main(["decode", "--json", "--config", str(config_file), str(image)]) == 0
    [scan] = json.loads(capsys.readouterr().out)["scans"]
    assert "ignored" not in scan


def test_cli_decode_json_shows_refused_text_escaped_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    barcode = zxingcpp.create_barcode("LC-1234\u202e9876", zxingcpp.BarcodeFormat.QRCode)
    image = save_png(tmp_path / "rlo.png", np.array(barcode.to_image(scale=6), dtype=np.uint8))
    assert main(["decode", "--json", str(image)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["scans"] == []
    assert record["rejected"] == [{"format": "QRCode", "reason": "format character U+202E",
                                   "text": "LC-1234\\u202e9876"}]
    assert main(["decode", str(image)]) == 0
    assert capsys.readouterr().out == (
        f"{image}: refused QRCode 'LC-1234\\u202e9876': format character U+202E\n"
    )


def test_cli_sandbox_port_clash_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sandbox", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"leat-scanner: sandbox cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another sandbox running? try --port 0 for any free port)"
    ]


def with_config(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str],
                *commands: str) -> list[tuple[int, str, str]]:
    """Each command run on a config.toml holding `text`: (exit code, stdout, stderr)."""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    results = []
    for command in commands:
        code = main([command, "--config", str(path)])
        captured = capsys.readouterr()
        results.append((code, captured.out, captured.err))
    return results


def test_cli_check_lists_every_config_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [(code, _, err)] = with_config(
        tmp_path, '[camera]\nfps = -3\n[mqtt]\nport = "x"\nextra = 1\n', capsys, "check")
    assert code == 2
    assert "camera.fps" in err
    assert "mqtt.port" in err
    assert "mqtt.extra: unknown key" in err


def test_cli_check_shows_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [(code, out, _)] = with_config(tmp_path, '[device]\nid = "till-7"\n', capsys, "check")
    assert code == 0
    assert "base topic: leat-scanner/till-7" in out
    assert "secret mqtt-password: not configured" in out


@pytest.mark.parametrize("command", ["check", "run"])
def test_cli_check_and_run_refuse_the_same_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    token = tmp_path / "leat-token"
    token.write_text("pat-hunter2", encoding="utf-8")
    token.chmod(0o604)
    [(code, out, err)] = with_config(
        tmp_path,
        f'[device]\nid = "till-7"\n[leat]\ntoken_file = "{token}"\nclient_id = "42"\n'
        f'portal_url = "https://shop.piggy.eu"\n',
        capsys, command,
    )
    assert code == 2
    problems = [line.strip() for line in err.splitlines()[1:]]
    assert [p.split(":", 1)[0] for p in problems] == [
        "leat.token_file", "leat.client_secret_file", "leat.shop_uuid",
        "leat.account_secret_file",
    ]
    assert "mode 604" in problems[0]
    assert "hunter2" not in err + out
    assert out == ""  # run never started, check printed no config


def test_cli_check_warns_about_a_hostname_id_and_names_capabilities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance import identity

    monkeypatch.setattr(identity, "SERIAL_PATHS", (tmp_path / "absent",))
    monkeypatch.setattr(identity, "CPUINFO", tmp_path / "absent")
    [(code, out, err)] = with_config(tmp_path, "[feedback]\nenabled = false\n", capsys,
                                     "check")
    assert code == 0
    assert "device.id: no Raspberry Pi serial number found" in err
    assert "capabilities: scan\n" in out


def test_cli_check_outside_the_service_sees_the_installed_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A technician's `sudo leat-scanner check` has no $CREDENTIALS_DIRECTORY (only the
    service gets one): what `provision secrets` installed must not read as missing."""
    from appliance import config

    store = tmp_path / "credstore"
    store.mkdir()
    for name in ("leat-token", "web-password"):
        (store / f"leat-scanner.{name}").write_text("x", encoding="utf-8")
    monkeypatch.setattr(config, "CREDENTIAL_STORES", (tmp_path / "absent", store))
    text = ('[device]\nid = "till-7"\n[leat]\nshop_uuid = "s-1"\n'
            '[web]\nenabled = true\nlan = true\nhost = "0.0.0.0"\n')
    (checked, out, _), (ran, _, err) = with_config(tmp_path, text, capsys, "check", "run")
    assert checked == 0
    assert "secret leat-token: installed as a systemd credential" in out
    assert "secret web-password: installed as a systemd credential" in out
    assert "secret mqtt-password: not configured" in out
    assert "capabilities: scan, identify, orders, commands" in out
    # `run` reads secrets only as the service gets them: there, none arrived
    assert ran == 2
    assert "web.lan: the page on the LAN needs a password" in err


def test_cli_check_as_a_user_who_may_not_look_in_the_credential_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service user may not look in root's /etc/credstore: its `check` says so, and
    judges those secrets absent as before (a token judged present would call for a
    shop_uuid: a false problem on every freshly provisioned device)."""
    from appliance import config

    monkeypatch.setattr(config, "stored_credential", lambda name: None)
    [(code, out, _)] = with_config(tmp_path, '[device]\nid = "counter-7"\n', capsys, "check")
    assert code == 0
    assert "secret leat-token: not visible to this user" in out
    assert "capabilities: scan, feedback" in out


def test_cli_run_missing_default_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_demo_prints_events_as_a_subscriber_sees_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--fps", "40"]) == 0
    out = capsys.readouterr().out
    scans = [
        json.loads(line.split("  ", 1)[1])
        for line in out.splitlines()
        if line.startswith("<- events/scan")
    ]
    assert {scan["kind"] for scan in scans} == {
        "loyalty_card", "giftcard", "voucher", "loyalty_token"
    }
    assert "<- availability (retained)  online" in out or "<- availability  online" in out
    summary = out.rstrip().splitlines()[-1]
    assert summary.startswith(f"== {len(scans)} scans published, {len(scans)} received")
    assert "[led/buzzer] accepted" in out
    assert summary.endswith("; 9 POS requests answered ok")
    # after Jane's card the demo POS redeems a reward, locks and redeems her voucher, each
    # request with a request_id and one reply, and prints a receipt line per step
    requests = _messages(out, "<- request/")
    replies = _messages(out, "<- response/")
    assert [(verb, body["request_id"]) for verb, body in requests] == [
        ("reward.redeem", "demo-order-0001-reward"), ("voucher.lock", "demo-order-0001-lock"),
        ("voucher.redeem", "demo-order-0001-voucher"), ("order.create", "demo-order-0001"),
        ("order.create", "demo-order-0002"), ("giftcard.pay", "demo-order-0003-giftcard"),
        ("prepaid.pay", "demo-order-0003-prepaid"), ("order.create", "demo-order-0003"),
        ("giftcard.reverse", "demo-order-0003-giftcard-back"),
    ]
    assert sorted((verb, reply["request_id"], reply["status"]) for verb, reply in replies) == \
        sorted((verb, body["request_id"], "accepted" if verb == "giftcard.reverse" else "ok")
               for verb, body in requests)
    data = {verb: reply["data"] for verb, reply in replies if verb != "order.create"}
    lock, redeem = data["voucher.lock"], dict(requests)["voucher.redeem"]
    assert redeem["release_key"] == lock["release_key"] and lock["status"] == "LOCKED"
    assert data["voucher.redeem"]["voucher"]["status"] == "REDEEMED"
    assert "   reward redeemed: Cup of coffee, -50 beans, balance 1200\n" in out
    assert "   voucher locked: WELCOME-JANE (LOCKED), release key kept" in out
    assert "   voucher redeemed: Welcome coffee (WELCOME-JANE), REDEEMED\n" in out
    # the order carries both as discounts linked to the Leat offers, amounts consistent
    order = requests[4][1]["order"]  # demo-order-0002, no offers
    assert "applied_discounts" not in order and order["total_order_amount"] == 950
    jane = requests[3][1]["order"]
    assert [(d["offer"]["type"], d["offer"]["uuid"]) for d in jane["applied_discounts"]] == [
        ("REWARD_REDEMPTION", data["reward.redeem"]["uuid"]),
        ("VOUCHER_REDEMPTION", data["voucher.redeem"]["redemption_uuid"]),
    ]
    assert jane["line_items"][0]["discount_amount"] == jane["total_discount_amount"] == 700
    assert jane["total_order_amount"] == jane["order_amount"] == 250
    assert all(reply["data"]["warnings"] == [] for verb, reply in replies
               if verb == "order.create")
    # two orders: one earns Jane points once (on the 2.50 paid), one gets a claim QR
    orders = [json.loads(line.split("  ", 1)[1]) for line in out.splitlines()
              if line.startswith("<- events/order")]
    assert {(o["external_identifier"], o["status"]) for o in orders} == {
        ("demo-order-0001", "delivered"), ("demo-order-0002", "delivered"),
        ("demo-order-0003", "delivered"),
    }
    assert "reached Leat once: +2 points, new balance 1202" in out
    assert "print this claim QR on the receipt" in out
    # the split payment: the order carries both Leat payments; the giftcard part given back
    split = requests[7][1]["order"]
    assert split["payments"] == [
        {"uuid": data["giftcard.pay"]["transaction_uuid"], "type": "GIFTCARD_TRANSACTION"},
        {"uuid": data["prepaid.pay"]["transaction_uuid"], "type": "PREPAID_TRANSACTION"},
    ]
    assert (data["giftcard.pay"]["balance_in_cents"], data["prepaid.pay"]["balance_in_cents"]) \
        == (1900, 1650)
    [back] = [e for verb, e in _messages(out, "<- events/command") if verb == ""]
    assert (back["verb"], back["status"], back["data"]["balance_in_cents"]) == (
        "giftcard.reverse", "ok", 2500)
    assert "   giftcard part given back: +6.00, balance 25.00\n" in out


def test_demo_fails_when_a_pos_step_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.config import Config
    from appliance.demo import run_demo
    from appliance.sandbox.seed import BUNDLED_SEED

    seed = json.loads(BUNDLED_SEED.read_text(encoding="utf-8"))
    coffee = next(r for r in seed["rewards"] if r["title"] == "Cup of coffee")
    coffee["stock"] = 0  # Leat refuses the reception: 1018, no stock
    assert run_demo(Config(), configured=False, fps=40, sandbox_seed=seed) == 1
    out = capsys.readouterr().out
    assert "== the demo POS failed: reward.redeem: error, leat_rejected: " in out
    assert "-> request/voucher.lock" not in out and "-> request/order.create" not in out


def _messages(out: str, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """(verb, payload) of each printed message whose line starts with `prefix`."""
    return [
        (line.split("  ", 1)[0].removeprefix(prefix), json.loads(line.split("  ", 1)[1]))
        for line in out.splitlines() if line.startswith(prefix)
    ]


def test_cli_sandbox_serves_until_sigterm() -> None:
    import signal
    import subprocess
    import sys

    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the server printed its URL
        assert first.startswith("Leat sandbox on http://127.0.0.1:")
        url = first.split(" on ", 1)[1].strip()
        token_line = proc.stdout.readline() + proc.stdout.readline()
        token = token_line.split("token:", 1)[1].split()[0]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            found = http.get(
                "/api/v3/oauth/clients/contact-identifiers/find",
                params={"contact_identifier_value": DEMO_CODES["loyalty_card"]},
            )
        assert found.status_code == 200
        assert found.json()["data"]["contact"]["email"] == "jane.doe@example.com"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_cli_outbox_lists_and_retries_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance.outbox import Outbox
    from appliance.outbox_items import Kind

    state = tmp_path / "state"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[device]\nstate_dir = "{state}"\n', encoding="utf-8")
    with Outbox(state / "outbox.sqlite3") as outbox:
        item = outbox.enqueue(Kind.ORDER, "pos-77", {"external_identifier": "pos-77"}).item
        assert outbox.claim(item.id) is not None
        outbox.mark_dead(item.id, code=1003, message="Invalid input")
    assert main(["outbox", "--config", str(cfg), "list"]) == 0
    listing = capsys.readouterr().out
    assert "pos-77" in listing and "dead" in listing and "Invalid input" in listing
    assert main(["outbox", "--config", str(cfg), "retry", str(item.id)]) == 0
    assert main(["outbox", "--config", str(cfg), "show", "--json", str(item.id)]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["state"] == "pending"
    assert main(["outbox", "--config", str(cfg), "show", "999"]) == 1
