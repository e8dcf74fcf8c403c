"""Resolution through Leat: the real client against the sandbox over HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from appliance import contract
from appliance.codes import Classifier, Kind
from appliance.config import CodesConfig
from appliance.decode import Scan
from appliance.feedback import Signal
from appliance.leat.client import LeatClient
from appliance.pipeline import ScanHandler
from appliance.resolve import Resolution, Resolver
from appliance.samples import DEMO_ACCOUNT_SECRET, DEMO_CODES, DEMO_SHOP_UUID
from appliance.sandbox import seed as sandbox_seed
from appliance.sandbox.server import LeatSandbox

CLASSIFIER = Classifier(CodesConfig())
SEED = sandbox_seed.BUNDLED_SEED


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LeatSandbox]:
    with LeatSandbox() as server:
        yield server


@pytest.fixture
def resolver(sandbox: LeatSandbox) -> Iterator[Resolver]:
    sandbox.faults.clear()
    client = LeatClient(sandbox.url, token=sandbox.personal_access_token, timeout_s=2.0)
    resolver = Resolver(
        client, shop_uuid=DEMO_SHOP_UUID, deadline_s=1.0, account_secret=DEMO_ACCOUNT_SECRET
    )
    yield resolver
    resolver.close()
    sandbox.faults.clear()


def resolve(resolver: Resolver, text: str) -> Resolution:
    return resolver.resolve(CLASSIFIER.classify(text))


def identification(resolution: Resolution, text: str) -> Mapping[str, Any]:
    """The published payload for a resolution, validated against the contract."""
    handler = ScanHandler("counter-1", CLASSIFIER, lambda *a, **k: None)
    scan_event = {"event_id": str(uuid.uuid4())}
    event = handler.identification_event(scan_event, CLASSIFIER.classify(text), resolution)
    contract.validate("identification", event)
    return event


def test_resolve_loyalty_card_gives_contact_balances_rewards_and_offers(
    resolver: Resolver,
) -> None:
    result = resolve(resolver, DEMO_CODES["loyalty_card"])
    assert (result.status, result.verified, result.reason) == ("ok", True, None)
    contact = result.contact
    assert contact is not None
    assert contact["first_name"] == "Jane"
    assert contact["email_masked"] == "j***@e***.com"
    assert contact["tier"] == "Gold"
    assert contact["points"] == 1250
    assert contact["points_name"] == "beans"
    assert contact["prepaid_balance_cents"] == 2000
    required = [r["required_credits"] for r in contact["rewards"]]
    assert required == sorted(required) and len(required) >= 3
    assert [r["affordable"] for r in contact["rewards"]] == [c <= 1250 for c in required]
    offers = {(o["type"], o["code"]) for o in contact["offers"]}
    assert ("voucher", "WELCOME-JANE") in offers
    assert any(kind == "collectable_reward" for kind, _ in offers)
    event = identification(result, DEMO_CODES["loyalty_card"])
    assert "jane.doe@example.com" not in str(event)


@pytest.mark.parametrize(
    ("text", "status", "code"),
    [
        ("LC-NOBODY000", "unknown", 60003),
        ("LC-INACTIVE9", "inactive", 60004),
        ("LC-UNLINKED7", "inactive", 60011),
    ],
)
def test_resolve_loyalty_card_refusals(
    resolver: Resolver, text: str, status: str, code: int
) -> None:
    result = resolve(resolver, text)
    assert (result.status, result.verified) == (status, True)
    assert result.reason is not None and result.reason["code"] == code
    assert result.contact is None
    identification(result, text)


@pytest.mark.parametrize(
    ("text", "status", "balance"),
    [
        (DEMO_CODES["giftcard"], "ok", 2500),
        ("GC-EMPTY0000", "empty", 0),
        ("GC-EXPIRED00", "expired", None),
        ("GC-NOSUCH000", "unknown", None),
        # Leat's own giftcard codes (docs/leat-assumptions.md)
        ("41654", "ok", 1000),
        ("https://leat.com/giftcard-balance?hash=41654", "ok", 1000),
        ("GJ2P725oe", "ok", 4200),
    ],
)
def test_resolve_giftcard(resolver: Resolver, text: str, status: str, balance: int | None) -> None:
    result = resolve(resolver, text)
    assert result.status == status
    if balance is not None:
        assert result.giftcard is not None
        assert result.giftcard["balance_cents"] == balance
    identification(result, text)


@pytest.mark.parametrize(
    ("text", "status", "valid"),
    [
        (DEMO_CODES["voucher"], "ok", True),
        ("OLD-2024", "expired", False),
        ("USED-2025", "redeemed", False),
        ("NOPE-0000", "unknown", None),
    ],
)
def test_resolve_voucher(resolver: Resolver, text: str, status: str, valid: bool | None) -> None:
    result = resolve(resolver, text)
    assert result.status == status
    if valid is not None:
        assert result.voucher is not None
        assert result.voucher["valid"] is valid
    if text == DEMO_CODES["voucher"]:
        assert result.voucher is not None
        assert result.voucher["attributes"]["discount_type"] == "percentage_discount"
        assert result.voucher["attributes"]["discount_value"] == 10
    identification(result, text)


def test_resolve_loyalty_token_signature_checked_locally(
    resolver: Resolver, sandbox: LeatSandbox
) -> None:
    before = len(sandbox.requests())
    good = resolve(resolver, DEMO_CODES["loyalty_token"])
    assert (good.status, good.verified) == ("ok", True)
    assert good.token is not None and good.token["unit_value"] == "10"
    forged = DEMO_CODES["loyalty_token"].replace("unit_value=10", "unit_value=99")
    bad = resolve(resolver, forged)
    assert (bad.status, bad.verified) == ("invalid", True)
    assert len(sandbox.requests()) == before  # no Leat call for tokens
    identification(bad, forged)


@pytest.mark.parametrize(
    "fault",
    [
        {"outage": True},
        {"maintenance": True},
        {"status": 500},
        {"rate_limit_retry_after": 30.0},
        {"latency_s": 3.0},  # beyond the 1 s deadline
    ],
    ids=["outage", "maintenance", "5xx", "429", "slow"],
)
def test_resolve_leat_down_or_slow_is_offline_and_unverified(
    resolver: Resolver, sandbox: LeatSandbox, fault: dict[str, Any]
) -> None:
    sandbox.faults.set(**fault)
    result = resolve(resolver, DEMO_CODES["loyalty_card"])
    assert (result.status, result.verified) == ("offline", False)
    assert resolver.reachable is False
    event = identification(result, DEMO_CODES["loyalty_card"])
    assert event["identifier"] == DEMO_CODES["loyalty_card"]  # the POS can still attach it
    sandbox.faults.clear()
    assert resolve(resolver, DEMO_CODES["loyalty_card"]).status == "ok"
    assert resolver.reachable is True


def test_resolve_feedback_follows_status(sandbox: LeatSandbox) -> None:
    client = LeatClient(sandbox.url, token=sandbox.personal_access_token, timeout_s=2.0)
    resolver = Resolver(client, shop_uuid=DEMO_SHOP_UUID, deadline_s=1.0)
    published: list[tuple[str, Mapping[str, Any], float | None]] = []

    def publish(name: str, payload: Mapping[str, Any], expiry_s: float | None = None) -> None:
        published.append((name, payload, expiry_s))

    handler = ScanHandler(
        "counter-1", CLASSIFIER, publish, resolver=resolver, identification_ttl_s=45
    )
    try:
        def scan(text: str) -> Signal:
            return handler.handle(Scan(text, "QRCode", ((0, 0),) * 4, 0.0)).outcome

        assert scan(DEMO_CODES["loyalty_card"]) is Signal.ACCEPTED
        assert scan("OLD-2024") is Signal.DENIED
        sandbox.faults.set(outage=True)
        assert scan(DEMO_CODES["giftcard"]) is Signal.OFFLINE
    finally:
        sandbox.faults.clear()
        resolver.close()
    names = [name for name, _, _ in published]
    assert names == ["scan", "identification"] * 3
    for (_, scan_event, _), (_, ident, expiry) in zip(
        published[::2], published[1::2], strict=True
    ):
        assert ident["scan_event_id"] == scan_event["event_id"]
        assert expiry == 45
        contract.validate("identification", ident)


def test_resolve_card_of_a_contact_without_tier() -> None:
    # Leat answers a tier-less contact with a nameless tier object (official PHP SDK
    # TierMapper); it must read as "no tier", not as a malformed answer (offline).
    seed = json.loads(SEED.read_text())
    sam = next(c for c in seed["contacts"] if c["email"].startswith("sam."))
    sam["tier"] = None
    with LeatSandbox(seed) as server:
        client = LeatClient(server.url, token=server.personal_access_token, timeout_s=2.0)
        resolver = Resolver(client, shop_uuid=DEMO_SHOP_UUID, deadline_s=2.0)
        try:
            result = resolver.resolve(CLASSIFIER.classify("LC-4D8R2W6T"))
        finally:
            resolver.close()
    assert (result.status, result.verified) == ("ok", True)
    assert result.contact is not None
    assert (result.contact["first_name"], result.contact["tier"]) == ("Sam", None)
    identification(result, "LC-4D8R2W6T")


def test_resolve_card_or_giftcard_asks_leat_identifier_first(
    resolver: Resolver, sandbox: LeatSandbox
) -> None:
    def lookups() -> list[str]:
        return [p.rsplit("/", 2)[-2] for m, p in sandbox.requests() if p.endswith("/find") or
                p.endswith("/find-one-by")]

    # 13 digits: an EAN card number or a numeric giftcard hash. Here it is a giftcard.
    before = len(lookups())
    result = resolve(resolver, "2026112200017")
    assert (result.status, result.kind) == ("ok", Kind.GIFTCARD)
    assert result.giftcard is not None
    assert result.giftcard["balance_cents"] == 5000
    assert lookups()[before:] == ["contact-identifiers", "giftcards"]
    event = identification(result, "2026112200017")
    assert event["kind"] == "giftcard"
    # Unknown to both: an unknown loyalty card, Leat's identifier answer as the reason.
    before = len(lookups())
    result = resolve(resolver, "8712345678906")
    assert (result.status, result.kind) == ("unknown", None)
    assert result.reason is not None and result.reason["code"] == 60003
    assert lookups()[before:] == ["contact-identifiers", "giftcards"]
    assert identification(result, "8712345678906")["kind"] == "loyalty_card"


def test_resolve_unambiguous_card_never_asks_for_a_giftcard(
    resolver: Resolver, sandbox: LeatSandbox
) -> None:
    before = len(sandbox.requests())
    result = resolve(resolver, "LC-NOBODY000")
    assert result.status == "unknown"
    assert not any("giftcards" in p for _, p in sandbox.requests()[before:])
