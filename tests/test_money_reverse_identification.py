"""A scanned giftcard's identification carries what a till needs to take, sell or load it:
sold or not, the program's limit, what a load may add, expiry (real sandbox over HTTP)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from appliance import contract
from appliance.codes import Classifier
from appliance.config import CodesConfig
from appliance.leat.client import LeatClient
from appliance.leat.payments import Giftcard
from appliance.pipeline import ScanHandler
from appliance.resolve import Resolver, giftcard_block
from appliance.samples import DEMO_SHOP_UUID
from appliance.sandbox import seed as sandbox_seed
from appliance.sandbox.server import LeatSandbox

CLASSIFIER = Classifier(CodesConfig())
PROGRAM = "f0f0f0f0-0000-4e00-8000-000000000001"
LIMIT = 50000  # the demo program's max_amount_in_cents


def _card(n: int, hash_: str, **fields: Any) -> dict[str, Any]:
    return {"id": 42000 + n, "uuid": f"9c9c9c9c-0000-4f00-8000-0000000001{n:02d}",
            "hash": hash_, "type": "PHYSICAL", "active": True, "upgradeable": True,
            "amount_in_cents": 0, "expiration_date": None, "program": PROGRAM, **fields}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LeatSandbox]:
    seed = copy.deepcopy(dict(sandbox_seed.read_seed(None)))
    seed["giftcards"] = [
        *seed["giftcards"],
        _card(1, "GC-NOLOAD0001", amount_in_cents=700, upgradeable=False),
        _card(2, "GC-INACTIVE01", amount_in_cents=900, active=False),
        _card(3, "GC-NEARFULL01", amount_in_cents=LIMIT - 100),
    ]
    with LeatSandbox(seed) as server:
        yield server


@pytest.fixture
def resolver(sandbox: LeatSandbox) -> Iterator[Resolver]:
    client = LeatClient(sandbox.url, token=sandbox.personal_access_token, timeout_s=2.0)
    resolver = Resolver(client, shop_uuid=DEMO_SHOP_UUID, deadline_s=2.0)
    yield resolver
    resolver.close()


def giftcard(resolver: Resolver, text: str) -> tuple[str, dict[str, Any]]:
    """(status, giftcard block) of a scanned text, the published event checked against the
    contract."""
    code = CLASSIFIER.classify(text)
    result = resolver.resolve(code)
    event = ScanHandler("counter-1", CLASSIFIER, lambda *a, **k: None).identification_event(
        {"event_id": str(uuid.uuid4())}, code, result)
    contract.validate("identification", event)
    assert event["giftcard"] is not None
    return event["status"], event["giftcard"]


@pytest.mark.parametrize(
    ("text", "status", "expected"),
    [
        # sold (a balance on a physical card), loadable up to the program's limit
        ("GC-8H2J4K6L8M", "ok", {"sold": True, "balance_cents": 2500, "upgradeable": True,
                                 "max_amount_cents": LIMIT, "loadable_cents": LIMIT - 2500}),
        # a physical card at 0: unsold, the POS guide's test before selling it
        ("GC-EMPTY0000", "empty", {"sold": False, "balance_cents": 0,
                                   "loadable_cents": LIMIT}),
        # digital cards exist once sold, whatever their balance
        ("41654", "ok", {"sold": True, "type": "DIGITAL", "loadable_cents": LIMIT - 1000}),
        # expired: nothing can be loaded, the expiry says why
        ("GC-EXPIRED00", "expired", {"sold": True, "loadable_cents": 0,
                                     "expires_at": "2025-06-30T23:59:59+00:00"}),
        ("GC-NOLOAD0001", "ok", {"upgradeable": False, "loadable_cents": 0}),
        ("GC-INACTIVE01", "inactive", {"active": False, "loadable_cents": 0}),
        ("GC-NEARFULL01", "ok", {"max_amount_cents": LIMIT, "loadable_cents": 100}),
    ],
)
def test_giftcard_identification_says_sold_limits_and_expiry(
    resolver: Resolver, text: str, status: str, expected: dict[str, Any]
) -> None:
    got_status, card = giftcard(resolver, text)
    assert got_status == status
    assert {k: card[k] for k in expected} == expected


def test_a_giftcard_without_program_limits_says_unknown_not_zero() -> None:
    card = Giftcard(uuid="u", hash="h", active=True, amount_in_cents=300,
                    expiration_date=None, type=None)
    block = giftcard_block(card, usable=True)
    assert (block["sold"], block["upgradeable"], block["max_amount_cents"],
            block["loadable_cents"]) == (None, None, None, None)
