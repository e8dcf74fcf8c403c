"""The command ledger and a full or failing disk (outside review: a payment Leat carried out
was answered `internal` when the disk filled during the call, and no event followed).

A value-taking command is refused at the door while the ledger's disk is nearly full; one
whose outcome cannot be recorded after Leat acted is answered with that outcome and
published on events/command, and a repeat is `busy` (the call stays `running`, reconciled at
the next start)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import namedtuple
from typing import Any

import pytest
from test_commands import Device, device  # noqa: F401
from test_money import GIFTCARD, pay

from appliance.pos.ledger import Ledger

Usage = namedtuple("Usage", "total used free")


def test_a_payment_is_refused_at_the_door_while_the_disk_is_nearly_full(
    device: Device, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    before = device.client.get_giftcard(GIFTCARD).amount_in_cents
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: Usage(real(path).total, real(path).total, 2**20))
    reply = device.intake.handle("giftcard.pay", json.dumps(pay("full-1", 700)).encode())
    assert reply["status"] == "error" and reply["error"]["code"] == "outbox_full", reply
    assert "not sent to Leat" in reply["error"]["message"]
    looked_up = device.intake.handle("contact.lookup", json.dumps(
        {"request_id": "read-1", "identifier": "LC-4D8R2W6T"}).encode())
    assert looked_up["error"] is None or looked_up["error"]["code"] != "outbox_full"
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert device.client.get_giftcard(GIFTCARD).amount_in_cents == before  # nothing taken
    again = device.intake.handle("giftcard.pay", json.dumps(pay("full-1", 700)).encode())
    assert again["status"] == "ok", again  # not recorded: the same request runs once room


def test_an_outcome_that_cannot_be_recorded_is_still_told(
    device: Device, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    before = device.client.get_giftcard(GIFTCARD).amount_in_cents
    real = Ledger.finish

    def full(self: Ledger, request_id: str, *args: Any, **kwargs: Any) -> None:
        if request_id == "full-2":
            raise sqlite3.OperationalError("database or disk is full")
        real(self, request_id, *args, **kwargs)

    monkeypatch.setattr(Ledger, "finish", full)
    reply = device.intake.handle("giftcard.pay", json.dumps(pay("full-2", 700)).encode())
    assert reply["status"] == "ok", reply  # Leat took it: never `internal`
    assert device.client.get_giftcard(GIFTCARD).amount_in_cents == before - 700
    [event] = device.events.wait(1)
    assert event["request_id"] == "full-2" and event["status"] == "ok"
    repeat = device.intake.handle("giftcard.pay", json.dumps(pay("full-2", 700)).encode())
    assert repeat["status"] == "error" and repeat["error"]["code"] == "busy", repeat
    assert device.client.get_giftcard(GIFTCARD).amount_in_cents == before - 700  # once
