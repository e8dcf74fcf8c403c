"""One request_id names one command, whichever store keeps it: a value-taking or read
command (the command ledger) and a give-back (the outbox) cannot share one. An outside
review paid with `rid-1`, then had `giftcard.reverse` with the same `rid-1` accepted."""

from __future__ import annotations

import json

from test_commands import Device, device  # noqa: F401
from test_money import GIFTCARD, pay


def test_a_payments_request_id_cannot_name_a_give_back(device: Device) -> None:  # noqa: F811
    first = device.intake.handle("giftcard.pay", json.dumps(pay("rid-1", 500)).encode())
    assert first["status"] == "ok", first
    tx = first["data"]["transaction_uuid"]
    second = device.intake.handle("giftcard.reverse", json.dumps(
        {"request_id": "rid-1", "transaction_uuid": tx, "giftcard_uuid": GIFTCARD}).encode())
    assert second["status"] == "error" and second["error"]["code"] == "conflict", second
    again = device.intake.handle("giftcard.pay", json.dumps(pay("rid-1", 500)).encode())
    assert again == first  # the payment's own repeat still gets its recorded answer


def test_a_give_backs_request_id_cannot_name_a_payment(device: Device) -> None:  # noqa: F811
    paid = device.intake.handle("giftcard.pay", json.dumps(pay("rid-2", 500)).encode())
    tx = paid["data"]["transaction_uuid"]
    reverse = {"request_id": "rid-3", "transaction_uuid": tx, "giftcard_uuid": GIFTCARD}
    accepted = device.intake.handle("giftcard.reverse", json.dumps(reverse).encode())
    assert accepted["status"] == "accepted", accepted
    reused = device.intake.handle("giftcard.pay", json.dumps(pay("rid-3", 300)).encode())
    assert reused["status"] == "error" and reused["error"]["code"] == "conflict", reused
    repeat = device.intake.handle("giftcard.reverse", json.dumps(reverse).encode())
    assert repeat["status"] == "accepted" and repeat["data"]["duplicate"] is True
