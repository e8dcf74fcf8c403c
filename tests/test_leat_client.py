"""LeatClient: every call against the sandbox over real HTTP, plus error mapping and the
documented shape variants (docs/leat-assumptions.md) on httpx.MockTransport where the sandbox cannot
produce them."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.config import LeatConfig
from appliance.errors import ConfigError, LeatAuthError, LeatRejected, LeatUnavailable
from appliance.leat.client import LeatClient
from appliance.leat.http import API_PREFIX, retry_after_seconds

SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"
PAT = "pat-0123456789-very-secret-token"
Handler = Callable[[httpx.Request], httpx.Response]


# ------------------------------------------------------------------------------ helpers


def ok(data: object, meta: object = None, status: int = 200) -> httpx.Response:
    """A Leat success envelope."""
    return httpx.Response(status, json={"data": data, "meta": {} if meta is None else meta})


def leat_error(code: int, message: str, status: int = 400) -> httpx.Response:
    """A Leat error envelope."""
    return httpx.Response(status, json={"code": code, "message": message, "status_code": status})


def mock_client(handler: Handler, **kwargs: Any) -> LeatClient:
    """A client over MockTransport (PAT unless OAuth credentials are given)."""
    if "client_id" not in kwargs:
        kwargs.setdefault("token", PAT)
    kwargs.setdefault("shop_uuid", SHOP)
    return LeatClient("https://leat.test", transport=httpx.MockTransport(handler), **kwargs)


def answer(response: httpx.Response) -> Handler:
    """A handler that always gives `response`."""
    return lambda request: response


class FakeClock:
    """An injectable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class OAuthServer:
    """A MockTransport token endpoint that records what we send (the sandbox cannot)."""

    def __init__(self, expires_in: int | None = 3600) -> None:
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.valid: set[str] = set()
        self.token_bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            with self.lock:
                self.token_bodies.append(json.loads(request.content))
                token = f"oauth-token-{len(self.issued) + 1}"
                self.issued.append(token)
                self.valid.add(token)
            body: dict[str, Any] = {"token_type": "Bearer", "access_token": token}
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            return httpx.Response(200, json=body)
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.valid:
            return httpx.Response(401, json={"message": "Unauthenticated."})
        return ok({"balance": 7})


# ----------------------------------------------------------------- requests we send


def test_client_sends_json_with_bearer_and_prefix() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({"uuid": "p1", "amount_in_cents": -500, "created_at": None})

    with mock_client(handler) as client:
        client.create_prepaid_transaction(amount_in_cents=-500, contact_uuid="c/../1")
    request = seen[0]
    assert request.method == "POST"
    assert request.url.raw_path == f"{API_PREFIX}/prepaid-transactions".encode()
    assert request.headers["Authorization"] == f"Bearer {PAT}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "amount_in_cents": -500,
        "contact_uuid": "c/../1",
        "shop_uuid": SHOP,
    }


def test_client_quotes_ids_into_one_path_segment() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok({"balance": 1})

    with mock_client(handler) as client:
        client.get_credit_balance("../../shops?x=1")
    assert seen[0].url.raw_path == (
        f"{API_PREFIX}/contacts/..%2F..%2Fshops%3Fx%3D1/credit-balance".encode()
    )


def test_client_needs_credentials_and_a_shop() -> None:
    with pytest.raises(ConfigError):
        LeatClient("https://leat.test")
    with pytest.raises(ConfigError):
        LeatClient("https://leat.test", client_id="1")
    with (
        mock_client(answer(ok({})), shop_uuid=None) as client,
        pytest.raises(ConfigError, match="shop_uuid"),
    ):
        client.redeem_voucher(code="X")


def test_client_from_config_reads_secret_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token_file"):
        LeatClient.from_config(LeatConfig())
    token = tmp_path / "token"
    token.write_text(PAT + "\n", encoding="utf-8")
    token.chmod(0o600)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return ok({"balance": 3})

    cfg = LeatConfig(base_url="https://leat.test", token_file=token, shop_uuid=SHOP)
    with LeatClient.from_config(cfg, transport=httpx.MockTransport(handler)) as client:
        assert client.shop_uuid == SHOP
        assert client.get_credit_balance("c1") == 3
    assert seen == [f"Bearer {PAT}"]
    secret = tmp_path / "client-secret"
    secret.write_text("oauth-very-secret", encoding="utf-8")
    secret.chmod(0o600)
    server = OAuthServer()
    cfg = LeatConfig(base_url="https://leat.test", client_id="1", client_secret_file=secret)
    with LeatClient.from_config(cfg, transport=httpx.MockTransport(server)) as client:
        assert client.get_credit_balance("c1") == 7
    assert server.token_bodies == [
        {"grant_type": "client_credentials", "client_id": "1", "client_secret": "oauth-very-secret"}
    ]


# ------------------------------------------------------------------------ error mapping


@pytest.mark.parametrize(
    ("response", "kind", "ambiguous"),
    [
        (httpx.Response(503, text="<html>maintenance</html>"), LeatUnavailable, False),
        (httpx.Response(500, text="oops"), LeatUnavailable, True),
        (httpx.Response(502, json={"code": 1000, "message": "x"}), LeatUnavailable, True),
        (httpx.Response(200, text="not json"), LeatUnavailable, True),
        (httpx.Response(200, json={"meta": {}}), LeatUnavailable, True),
        (httpx.Response(200, json=[1, 2]), LeatUnavailable, True),
        (httpx.Response(401, json={"message": "Unauthenticated."}), LeatAuthError, None),
        (httpx.Response(401, text=""), LeatAuthError, None),
    ],
)
def test_client_maps_statuses(
    response: httpx.Response, kind: type[Exception], ambiguous: bool | None
) -> None:
    with mock_client(answer(response)) as client, pytest.raises(kind) as info:
        client.get_credit_balance("c1")
    if ambiguous is not None:
        assert isinstance(info.value, LeatUnavailable)
        assert info.value.ambiguous is ambiguous


def test_client_keeps_leat_code_and_whole_message() -> None:
    message = "Onvoldoende punten|Insufficient credits"
    with (
        mock_client(answer(leat_error(1017, message))) as client,
        pytest.raises(LeatRejected) as info,
    ):
        client.create_reward_reception(contact_uuid="c", reward_uuid="r")
    assert (info.value.code, info.value.leat_message, info.value.status_code) == (
        1017,
        message,
        400,
    )
    # Branch on the code, whatever the status.
    with (
        mock_client(answer(leat_error(80004, "Voucher not found", 404))) as client,
        pytest.raises(LeatRejected) as info,
    ):
        client.find_voucher("NOPE-1234")
    assert (info.value.code, info.value.status_code) == (80004, 404)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, text="<html>Not Found</html>"),
        httpx.Response(422, json={"message": "The given data was invalid.", "errors": {}}),
        httpx.Response(400, json={"error": "bad"}),
    ],
)
def test_client_rejects_4xx_without_envelope_with_code_zero(response: httpx.Response) -> None:
    with mock_client(answer(response)) as client, pytest.raises(LeatRejected) as info:
        client.get_shop("s1")
    assert info.value.code == 0
    assert info.value.status_code == response.status_code


def test_client_rate_limit_retry_after_seconds_and_date() -> None:
    with (
        mock_client(answer(httpx.Response(429, headers={"Retry-After": "17"}))) as client,
        pytest.raises(LeatUnavailable) as info,
    ):
        client.list_shops()
    assert info.value.retry_after == 17.0
    assert info.value.ambiguous is False
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    with (
        mock_client(answer(httpx.Response(429, headers={"Retry-After": when}))) as client,
        pytest.raises(LeatUnavailable) as info,
    ):
        client.list_shops()
    assert info.value.retry_after is not None
    assert 100 <= info.value.retry_after <= 120


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("  ") is None
    assert retry_after_seconds("nan") is None
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds("Thu, 01 Jan 2026 12:01:30 GMT", now) == 90.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow connect"), False),
        (httpx.PoolTimeout("pool"), False),
        (httpx.ReadTimeout("slow"), True),
        (httpx.WriteTimeout("slow write"), True),
        (httpx.ReadError("reset"), True),
        (httpx.WriteError("broken pipe"), True),
        (httpx.RemoteProtocolError("Server disconnected"), True),
    ],
)
def test_client_maps_transport_errors(exc: httpx.TransportError, ambiguous: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with mock_client(handler) as client, pytest.raises(LeatUnavailable) as info:
        client.create_and_process_order({"external_identifier": "o-1"})
    assert info.value.ambiguous is ambiguous
    assert info.value.__cause__ is exc


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"value": "LC-1", "name": "Card"}, "data.active"),
        ({"value": "LC-1", "active": "yes"}, "data.active"),
        ({"value": 12, "active": True}, "data.value"),
        ({"value": "LC-1", "active": True, "contact": {"email": "a@b.c"}}, "data.contact.uuid"),
        ({"value": "LC-1", "active": True, "contact": "c1"}, "data.contact"),
        (None, "data"),
    ],
)
def test_client_refuses_malformed_fields(data: object, field: str) -> None:
    with mock_client(answer(ok(data))) as client, pytest.raises(LeatUnavailable) as info:
        client.find_contact_identifier("LC-1")
    assert info.value.ambiguous is True
    assert str(info.value) == f"malformed response from Leat: {field}"


def test_client_refuses_bool_as_integer_and_bad_dates() -> None:
    with mock_client(answer(ok({"balance": True}))) as client, pytest.raises(LeatUnavailable):
        client.get_credit_balance("c1")
    card = {"uuid": "g", "hash": "GC", "active": True, "amount_in_cents": 5}
    bad_date = {**card, "expiration_date": "next tuesday"}
    with mock_client(answer(ok(bad_date))) as client, pytest.raises(LeatUnavailable):
        client.get_giftcard("g")
    with mock_client(answer(ok({**card, "amount_in_cents": 5.0}))) as client:
        assert client.get_giftcard("g").amount_in_cents == 5


# ------------------------------------------------------------------------------- OAuth


# OAuth refresh and the 401 retry run against the sandbox (see "sandbox: errors and auth").


# ---------------------------------------------------------------------- shape variants

REWARD = {
    "id": 2,
    "uuid": "r-coffee",
    "title": "Cup of coffee",
    "type": "physical",
    "is_active": True,
    "required_credits": 50,
    "media": None,
    "pre_redeemable": False,
    "discount_type": "product",
    "product_code": "COF-1",
}


def test_rewards_accept_meta_list_type_or_reward_type_and_flatten_attributes() -> None:
    rewards = [
        {**REWARD, "uuid": "r-lunch", "title": "Lunch", "required_credits": 2000},
        REWARD,
        {
            "uuid": "r-cake",
            "title": "apple cake",
            "reward_type": "DIGITAL",
            "required_credits": 50,
            "active": False,
        },
    ]
    with mock_client(answer(ok(rewards, meta=[]))) as client:
        result = client.list_rewards()
    assert [r.uuid for r in result] == ["r-cake", "r-coffee", "r-lunch"]
    cake, coffee, _ = result
    assert (cake.reward_type, cake.is_active, cake.attributes) == ("DIGITAL", False, {})
    assert coffee.reward_type == "PHYSICAL"
    assert dict(coffee.attributes) == {"discount_type": "product", "product_code": "COF-1"}


def test_collect_accepts_slim_and_full_responses() -> None:
    slim = {"uuid": "crr-1", "status": "COLLECTED"}
    full = {"uuid": "lt-1", "title": "Croissant", "has_been_collected": True, "reward": REWARD}
    with mock_client(answer(ok(slim))) as client:
        assert client.collect_reward("lt-1").status == "COLLECTED"
    with mock_client(answer(ok(full, meta=[]))) as client:
        result = client.collect_reward("lt-1")
    assert (result.uuid, result.status) == ("lt-1", "COLLECTED")


ORDER = {
    "uuid": "o-uuid",
    "external_identifier": "pos-1",
    "status": "completed",
    "payment_status": "PAID",
    "currency": "EUR",
    "total_order_amount": 3331,
    "contact": {"uuid": "c1", "email": "jane.doe@example.com"},
    "created_at": "2026-01-01T10:00:00+00:00",
}


@pytest.mark.parametrize(
    ("result", "points", "new_balance"),
    [
        ({"type": "POINTS_TRANSACTION", "data": {"points": 35, "new_balance": 2267}}, 35, 2267),
        ({"type": "points_transaction", "data": {"points": 35, "new_balance": 2267}}, 35, 2267),
        ({"type": "Points_Transaction", "points": 35, "data": []}, 35, None),
        ({"type": "PREPAID_TRANSACTION", "data": {"uuid": "x"}}, None, None),
        (None, None, None),
    ],
)
def test_order_result_variants(
    result: dict[str, Any] | None, points: int | None, new_balance: int | None
) -> None:
    with mock_client(answer(ok({"order": ORDER, "result": result}))) as client:
        outcome = client.create_and_process_order({"external_identifier": "pos-1"})
    assert outcome.order is not None
    assert (outcome.order.uuid, outcome.order.status) == ("o-uuid", "COMPLETED")
    assert (outcome.points, outcome.new_balance) == (points, new_balance)


def test_process_order_reads_a_bare_result() -> None:
    bare = {"type": "points_transaction", "data": {"points": 12, "new_balance": 40}}
    with mock_client(answer(ok(bare))) as client:
        outcome = client.process_order("o-uuid")
    assert (outcome.order, outcome.points, outcome.new_balance) == (None, 12, 40)
    assert outcome.result_type == "POINTS_TRANSACTION"


def test_order_return_result() -> None:
    data = {
        "return": {"uuid": "ret-1", "status": "COMPLETED", "order": {"uuid": "o-uuid"}},
        "result": {"type": "points_transaction", "data": {"points": -35, "new_balance": 10}},
    }
    with mock_client(answer(ok(data))) as client:
        result = client.create_and_process_order_return({"external_identifier": "r-1"})
    assert (result.uuid, result.order_uuid, result.points, result.new_balance) == (
        "ret-1",
        "o-uuid",
        -35,
        10,
    )


def test_giftcard_transaction_reads_nested_card_and_shop() -> None:
    data = {
        "id": 2271,
        "uuid": "gt-1",
        "amount_in_cents": -1000,
        "type": "STANDARD",
        "settled": False,
        "card": {"id": 41650, "uuid": "g-1"},
        "shop": {"id": 15, "uuid": SHOP, "name": "Shop"},
        "settlements": [],
        "created_at": "2023-11-12T16:10:15+00:00",
    }
    with mock_client(answer(ok(data))) as client:
        tx = client.create_giftcard_transaction(giftcard_uuid="g-1", amount_in_cents=-1000)
    assert (tx.uuid, tx.giftcard_uuid, tx.shop_uuid, tx.amount_in_cents) == (
        "gt-1",
        "g-1",
        SHOP,
        -1000,
    )
    assert tx.created_at == datetime(2023, 11, 12, 16, 10, 15, tzinfo=UTC)


def test_reverse_voucher_falls_back_to_voucher_uuid_on_80004() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if "/vouchers/red-1/" in request.url.path:
            return leat_error(80004, "Voucher not found")
        return ok([])

    with mock_client(handler) as client:
        result = client.reverse_voucher_redemption(redemption_uuid="red-1", voucher_uuid="v-1")
    assert result.reversed_uuid == "v-1"
    assert seen == [f"{API_PREFIX}/vouchers/red-1/reverse", f"{API_PREFIX}/vouchers/v-1/reverse"]
    with (
        mock_client(answer(leat_error(80005, "already"))) as client,
        pytest.raises(LeatRejected),
    ):
        client.reverse_voucher_redemption(redemption_uuid="red-1", voucher_uuid="v-1")
    with mock_client(handler) as client, pytest.raises(ValueError):
        client.reverse_voucher_redemption()


def test_list_vouchers_reads_a_paginated_list() -> None:
    seen: list[httpx.URL] = []
    voucher = {"uuid": "v1", "code": "WELCOME-JANE", "status": "active", "contact": None}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(
            200,
            json={
                "data": [voucher],
                "links": {"first": "x", "last": "x", "prev": None, "next": None},
                "meta": {"current_page": 1, "last_page": 1, "per_page": 100, "total": 1},
            },
        )

    with mock_client(handler) as client:
        vouchers = client.list_vouchers(contact_uuid="c1")
    assert [(v.code, v.status, v.is_redeemed) for v in vouchers] == [
        ("WELCOME-JANE", "ACTIVE", False)
    ]
    assert seen[0].params["contact_uuid"] == "c1"


def test_contact_first_name_from_attributes_and_missing_parts() -> None:
    data = {
        "uuid": "c1",
        "email": None,
        "attributes": [
            {"value": "x", "attribute": {"name": "lastname"}},
            {"value": "Jane", "attribute": {"name": "firstname"}},
        ],
        "tier": [],
        "credit_balance": {"id": 1, "balance": 12},
        "current_values": {"firstname": ""},
    }
    with mock_client(answer(ok(data, meta=[]))) as client:
        contact = client.get_contact("c1")
    assert (contact.first_name, contact.credit_balance, contact.prepaid_balance_cents) == (
        "Jane",
        12,
        None,
    )
    assert contact.tier is None


# ------------------------------------------------------------------ against the sandbox

JANE_CARD = "LC-7F3K9Q2M"
SAM_CARD = "LC-4D8R2W6T"
JANE_EMAIL = "jane.doe@example.com"
NO_SUCH = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def leat(sandbox: Any) -> Iterator[LeatClient]:
    """A client of the sandbox with its personal access token."""
    with LeatClient(sandbox.url, token=sandbox.personal_access_token, shop_uuid=SHOP) as client:
        yield client


def sandbox_oauth(sandbox: Any, **kwargs: Any) -> LeatClient:
    """A client of the sandbox using OAuth client credentials."""
    return LeatClient(
        sandbox.url,
        client_id=sandbox.oauth_client_id,
        client_secret=sandbox.oauth_client_secret,
        shop_uuid=SHOP,
        **kwargs,
    )


def jane(leat: LeatClient) -> str:
    """Jane's contact uuid, found through her card."""
    contact = leat.find_contact_identifier(JANE_CARD).contact
    assert contact is not None
    return contact.uuid


def rejected(code: int, call: Callable[[], object]) -> LeatRejected:
    """Assert that `call` is rejected by Leat with `code`."""
    with pytest.raises(LeatRejected) as info:
        call()
    assert info.value.code == code, info.value
    return info.value


def order_body(external_identifier: str, contact_uuid: str, amount: int = 2500) -> dict[str, Any]:
    """A minimal complete create-and-process body (Leat's Create Order docs)."""
    return {
        "external_identifier": external_identifier,
        "status": "COMPLETED",
        "payment_status": "PAID",
        "total_order_amount": amount,
        "currency": "EUR",
        "contact": {"uuid": contact_uuid},
        "business_profile": {"uuid": SHOP},
        "line_items": [
            {
                "external_identifier": f"{external_identifier}-1",
                "name": "Coffee beans",
                "quantity": 1,
                "price": amount,
                "total_amount": amount,
                "product": {"external_identifier": "BEANS"},
            }
        ],
    }


def test_sandbox_contact_identifiers(leat: LeatClient) -> None:
    card = leat.find_contact_identifier(JANE_CARD)
    assert (card.value, card.active) == (JANE_CARD, True)
    assert card.contact is not None
    assert card.contact.email == JANE_EMAIL
    assert leat.find_contact_identifier("LC-UNLINKED7").contact is None
    rejected(60003, lambda: leat.find_contact_identifier("LC-UNKNOWN00"))
    # The resolver (not the client) turns an unlinked card into 60011; Leat answers null.
    rejected(60004, lambda: leat.find_contact_identifier("LC-INACTIVE9"))


def test_sandbox_contacts_balances_and_tier(leat: LeatClient) -> None:
    uuid = jane(leat)
    contact = leat.get_contact(uuid)
    assert (contact.email, contact.first_name) == (JANE_EMAIL, "Jane")
    assert (contact.credit_balance, contact.prepaid_balance_cents) == (1250, 2000)
    assert contact.tier is not None
    assert contact.tier.name == "Gold"
    assert leat.get_credit_balance(uuid) == 1250
    assert leat.get_prepaid_balance(uuid) == 2000
    tier = leat.get_tier(uuid)
    assert tier is not None
    assert tier.name == "Gold"
    assert leat.find_contact_by_email(JANE_EMAIL).uuid == uuid
    rejected(55031, lambda: leat.find_contact_by_email("nobody@example.com"))
    rejected(55031, lambda: leat.get_contact("00000000-0000-4000-8000-000000000000"))
    rejected(55031, lambda: leat.get_credit_balance("00000000-0000-4000-8000-000000000000"))
    created = leat.find_or_create_contact("new.customer@example.com")
    assert created.email == "new.customer@example.com"
    assert leat.find_or_create_contact("new.customer@example.com").uuid == created.uuid


def test_sandbox_contact_without_tier_has_none(leat: LeatClient) -> None:
    # Leat sends a tier object without a name (official PHP SDK TierMapper), not null.
    created = leat.find_or_create_contact("no.tier@example.com")
    assert created.tier is None
    assert leat.get_contact(created.uuid).tier is None
    assert leat.get_tier(created.uuid) is None


def test_sandbox_rewards_sorted_and_reception_reversed(leat: LeatClient) -> None:
    uuid = jane(leat)
    rewards = leat.list_rewards(contact_uuid=uuid)
    assert [r.title for r in rewards] == ["Croissant", "Cup of coffee", "Lunch for two"]
    assert [r.required_credits for r in rewards] == [30, 50, 2000]
    assert rewards[0].pre_redeemable is True
    coffee = rewards[1]
    reception = leat.create_reward_reception(contact_uuid=uuid, reward_uuid=coffee.uuid)
    assert reception.credits == -50
    assert leat.get_credit_balance(uuid) == 1200
    reversal = leat.reverse_reward_reception(reception.uuid)
    assert reversal.credits == 50
    assert leat.get_credit_balance(uuid) == 1250
    sam = leat.find_contact_identifier(SAM_CARD).contact
    assert sam is not None
    lunch = rewards[2]
    error = rejected(
        1017, lambda: leat.create_reward_reception(contact_uuid=sam.uuid, reward_uuid=lunch.uuid)
    )
    assert error.leat_message
    rejected(
        6003,
        lambda: leat.create_reward_reception(
            contact_uuid=uuid, reward_uuid="00000000-0000-4000-8000-000000000000"
        ),
    )


def test_sandbox_collectable_rewards(leat: LeatClient) -> None:
    uuid = jane(leat)
    croissant = leat.list_rewards()[0]
    reception = leat.create_reward_reception(
        contact_uuid=uuid, reward_uuid=croissant.uuid, contact_identifier_value=JANE_CARD
    )
    waiting = leat.list_collectable_rewards(uuid)
    assert reception.uuid in [c.uuid for c in waiting if not c.has_been_collected]
    collected = leat.collect_reward(reception.uuid)
    assert collected.status == "COLLECTED"
    rejected(80300, lambda: leat.collect_reward("00000000-0000-4000-8000-000000000000"))
    assert leat.reverse_collected_reward(collected.uuid).status == "REVERSED"
    seeded = [c for c in waiting if c.uuid != reception.uuid]
    assert [c.title for c in seeded] == ["Croissant"]
    assert seeded[0].reward is not None
    assert seeded[0].reward.attributes["product_code"] == "CROISSANT"


def test_sandbox_voucher_lock_release_redeem_reverse(leat: LeatClient) -> None:
    uuid = jane(leat)
    voucher = leat.find_voucher("SPRING-2X7Q")
    assert (voucher.code, voucher.status, voucher.is_redeemed) == ("SPRING-2X7Q", "ACTIVE", False)
    assert voucher.promotion is not None
    assert {"discount_type", "discount_value"} <= set(voucher.promotion.attributes)
    leat.validate_voucher(voucher.uuid, contact_uuid=uuid)
    lock = leat.lock_voucher(voucher.uuid)
    assert (lock.voucher_uuid, lock.status) == (voucher.uuid, "LOCKED")
    assert lock.release_key
    rejected(80017, lambda: leat.lock_voucher(voucher.uuid))
    assert leat.release_voucher(voucher.uuid, lock.release_key).status == "ACTIVE"
    lock = leat.lock_voucher(voucher.uuid)
    redemption = leat.redeem_voucher(
        code="SPRING-2X7Q", contact_uuid=uuid, release_key=lock.release_key
    )
    assert (redemption.voucher.status, redemption.voucher.is_redeemed) == ("REDEEMED", True)
    assert redemption.voucher.redeemed_at is not None
    rejected(80005, lambda: leat.redeem_voucher(code="SPRING-2X7Q", contact_uuid=uuid))
    reversal = leat.reverse_voucher_redemption(
        redemption_uuid=redemption.redemption_uuid, voucher_uuid=voucher.uuid
    )
    assert reversal.reversed_uuid in (redemption.redemption_uuid, voucher.uuid)
    assert leat.find_voucher("SPRING-2X7Q").status == "ACTIVE"


def test_sandbox_voucher_errors(leat: LeatClient) -> None:
    rejected(80004, lambda: leat.find_voucher("NOPE-0000"))
    welcome = leat.find_voucher("WELCOME-JANE")
    assert welcome.contact is not None
    assert welcome.contact.email == JANE_EMAIL
    old = leat.find_voucher("OLD-2024")
    assert old.expiration_date is not None
    assert old.expiration_date < datetime.now(UTC)
    rejected(80006, lambda: leat.redeem_voucher(code="OLD-2024", contact_uuid=jane(leat)))
    rejected(80006, lambda: leat.validate_voucher(old.uuid, contact_uuid=jane(leat)))
    rejected(80005, lambda: leat.redeem_voucher(code="USED-2025", contact_uuid=jane(leat)))
    redemption = leat.redeem_voucher(code="WELCOME-JANE")
    assert redemption.voucher.contact is not None


def test_sandbox_giftcards(leat: LeatClient) -> None:
    card = leat.find_giftcard("GC-8H2J4K6L8M")
    assert (card.hash, card.amount_in_cents, card.active) == ("GC-8H2J4K6L8M", 2500, True)
    assert leat.get_giftcard(card.uuid) == card
    tx = leat.create_giftcard_transaction(giftcard_uuid=card.uuid, amount_in_cents=-1000)
    assert tx.amount_in_cents == -1000
    assert tx.giftcard_uuid in (None, card.uuid)
    assert leat.get_giftcard(card.uuid).amount_in_cents == 1500
    reversal = leat.reverse_giftcard_transaction(tx.uuid)
    assert reversal.amount_in_cents == 1000
    assert leat.get_giftcard(card.uuid).amount_in_cents == 2500
    first = leat.create_giftcard_transaction(giftcard_uuid=card.uuid, amount_in_cents=-100)
    leat.create_giftcard_transaction(giftcard_uuid=card.uuid, amount_in_cents=-200)
    rejected(55025, lambda: leat.reverse_giftcard_transaction(first.uuid))
    rejected(5010, lambda: leat.reverse_giftcard_transaction(NO_SUCH))
    rejected(5001, lambda: leat.get_giftcard(NO_SUCH))
    rejected(5001, lambda: leat.find_giftcard("GC-UNKNOWN000"))
    empty = leat.find_giftcard("GC-EMPTY0000")
    assert empty.amount_in_cents == 0
    rejected(
        5003,
        lambda: leat.create_giftcard_transaction(giftcard_uuid=empty.uuid, amount_in_cents=-100),
    )
    expired = leat.find_giftcard("GC-EXPIRED00")
    rejected(
        5002,
        lambda: leat.create_giftcard_transaction(giftcard_uuid=expired.uuid, amount_in_cents=-100),
    )


def test_sandbox_prepaid(leat: LeatClient) -> None:
    uuid = jane(leat)
    tx = leat.create_prepaid_transaction(amount_in_cents=-500, contact_uuid=uuid)
    assert (tx.amount_in_cents, tx.balance_after_cents) == (-500, 1500)
    back = leat.reverse_prepaid_transaction(tx.uuid)
    assert (back.amount_in_cents, back.balance_after_cents) == (500, 2000)
    by_card = leat.create_prepaid_transaction(
        amount_in_cents=300, contact_identifier_value=JANE_CARD
    )
    assert by_card.balance_after_cents == 2300
    rejected(
        60003,
        lambda: leat.create_prepaid_transaction(
            amount_in_cents=-1, contact_identifier_value="LC-UNKNOWN00"
        ),
    )
    with pytest.raises(ValueError):
        leat.create_prepaid_transaction(amount_in_cents=-1)


def test_sandbox_orders_and_replay(leat: LeatClient) -> None:
    uuid = jane(leat)
    result = leat.create_and_process_order(order_body("pos-0001", uuid))
    assert result.order is not None
    assert result.order.external_identifier == "pos-0001"
    assert result.points is not None
    assert result.points > 0
    assert result.new_balance == 1250 + result.points
    # ASSUMPTION (leat-assumptions O3): the sandbox refuses
    # a repeated external_identifier with 1003.
    rejected(1003, lambda: leat.create_and_process_order(order_body("pos-0001", uuid)))
    found = leat.find_order("pos-0001")
    assert found is not None
    assert found.uuid == result.order.uuid
    assert leat.get_order(found.uuid).external_identifier == "pos-0001"
    assert leat.find_order("pos-never-sent") is None
    created = leat.create_order(order_body("pos-0002", uuid, amount=1000))
    processed = leat.process_order(created.uuid)
    assert processed.points is not None
    assert processed.points > 0
    # ASSUMPTION of the sandbox: processing twice is refused (1003), no double points.
    rejected(1003, lambda: leat.process_order(created.uuid))
    returned = leat.create_and_process_order_return(
        {
            "order": {"external_identifier": "pos-0001"},
            "external_identifier": "ret-0001",
            "status": "COMPLETED",
            "line_items": [{"external_identifier": "pos-0001-1", "quantity": 1}],
        }
    )
    assert returned.order_uuid in (None, result.order.uuid)
    assert returned.uuid


def test_sandbox_credit_receptions(leat: LeatClient) -> None:
    uuid = jane(leat)
    credits = leat.calculate_credits(unit_value=10.40, contact_uuid=uuid)
    assert credits >= 0
    reception = leat.create_credit_reception(contact_uuid=uuid, credits=15)
    assert reception.credits == 15
    assert leat.get_credit_balance(uuid) == 1265
    reversal = leat.reverse_credit_reception(reception.uuid)
    assert reversal.credits == -15
    rejected(1028, lambda: leat.reverse_credit_reception(NO_SUCH))
    by_amount = leat.create_credit_reception(
        contact_uuid=uuid, unit_value=10.40, unit_name="purchase_amount"
    )
    assert by_amount.credits == credits
    rejected(
        55031,
        lambda: leat.create_credit_reception(
            contact_uuid="00000000-0000-4000-8000-000000000000", credits=1
        ),
    )


def test_sandbox_shops_and_program(leat: LeatClient) -> None:
    shops = leat.list_shops()
    assert SHOP in [s.uuid for s in shops]
    assert leat.get_shop(SHOP).uuid == SHOP
    rejected(1008, lambda: leat.get_shop("00000000-0000-4000-8000-000000000000"))
    program = leat.get_loyalty_program()
    assert (program.name, program.custom_credit_name) == ("Demo Rewards", "beans")
    assert program.unit_name == "purchase_amount"


# ------------------------------------------------------------- sandbox: errors and auth


def test_sandbox_wrong_token_is_auth_error(sandbox: Any) -> None:
    with (
        LeatClient(sandbox.url, token="not-the-token", shop_uuid=SHOP) as client,
        pytest.raises(LeatAuthError),
    ):
        client.list_shops()
    with (
        LeatClient(sandbox.url, client_id="1", client_secret="wrong", shop_uuid=SHOP) as client,
        pytest.raises(LeatAuthError),
    ):
        client.list_shops()


class SharedClock(FakeClock):
    """One clock for the client (monotonic seconds) and the sandbox (datetimes)."""

    def wall(self) -> datetime:
        return datetime(2026, 11, 22, tzinfo=UTC) + timedelta(seconds=self.now)


def token_posts(sandbox: Any) -> int:
    return sandbox.requests().count(("POST", "/oauth/token"))


def refused(sandbox: Any) -> int:
    """How many API answers were HTTP 401."""
    return sum(1 for _, path, status in sandbox.answers() if status == 401)


def test_sandbox_oauth_token_refreshed_before_it_expires() -> None:
    from appliance.sandbox.server import LeatSandbox

    clock = SharedClock()
    with LeatSandbox(token_lifetime_s=600, clock=clock.wall) as sandbox:
        with sandbox_oauth(sandbox, clock=clock) as client:
            for _ in range(5):
                client.list_shops()
            assert token_posts(sandbox) == 1
            clock.now += 600 - 61  # still inside expires_in minus the 60 s margin
            client.list_shops()
            assert token_posts(sandbox) == 1
            clock.now += 2  # inside the margin: a new token before the sandbox refuses one
            client.list_shops()
            assert token_posts(sandbox) == 2
            clock.now += 599  # the sandbox's expiry of token 2 is near; margin again
            client.list_shops()
            assert token_posts(sandbox) == 3
        assert refused(sandbox) == 0  # never sent an expired token


def test_sandbox_oauth_revoked_token_401_refetched_once(sandbox: Any) -> None:
    sandbox.token_lifetime_s = None  # no expires_in: a token is used until Leat refuses it
    with sandbox_oauth(sandbox) as client:
        for _ in range(4):
            client.list_shops()
        assert token_posts(sandbox) == 1
        sandbox.expire_tokens()  # Leat revoked it: the next call gets 401
        client.list_shops()
        client.list_shops()
        assert (token_posts(sandbox), refused(sandbox)) == (2, 1)
        # Leat keeps refusing (401 on the API, tokens still issued): one refetch, no more.
        sandbox.faults.set(status=401, body={"message": "Unauthenticated."},
                           only_paths=("/shops",))
        with pytest.raises(LeatAuthError):
            client.list_shops()
        assert (token_posts(sandbox), refused(sandbox)) == (3, 3)


def test_sandbox_oauth_token_endpoint_down_is_unavailable(sandbox: Any) -> None:
    sandbox.faults.set(maintenance=True, only_paths=("/oauth/token",))
    with sandbox_oauth(sandbox) as client, pytest.raises(LeatUnavailable):
        client.list_shops()
    assert sandbox.requests() == [("POST", "/oauth/token")]


def test_sandbox_pat_401_is_auth_error_without_retry(sandbox: Any) -> None:
    with (
        LeatClient(sandbox.url, token="not-the-token", shop_uuid=SHOP) as client,
        pytest.raises(LeatAuthError),
    ):
        client.list_shops()
    assert sandbox.requests() == [("GET", f"{API_PREFIX}/shops")]
    assert refused(sandbox) == 1


def test_sandbox_oauth_one_token_for_many_threads(sandbox: Any) -> None:
    errors: list[BaseException] = []
    with sandbox_oauth(sandbox) as client:

        def work() -> None:
            try:
                for _ in range(5):
                    client.list_shops()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert errors == []
    assert token_posts(sandbox) == 1


def test_sandbox_rate_limit_and_maintenance(sandbox: Any, leat: LeatClient) -> None:
    sandbox.faults.set(rate_limit_retry_after=7, times=1)
    with pytest.raises(LeatUnavailable) as info:
        leat.list_shops()
    assert (info.value.retry_after, info.value.ambiguous) == (7.0, False)
    sandbox.faults.set(maintenance=True, times=1)
    with pytest.raises(LeatUnavailable, match="maintenance") as info:
        leat.list_shops()
    assert info.value.ambiguous is False
    sandbox.faults.set(status=500, times=1)
    with pytest.raises(LeatUnavailable) as info:
        leat.list_shops()
    assert info.value.ambiguous is True
    assert leat.list_shops()  # faults used up


def test_sandbox_faults_only_on_given_paths(sandbox: Any, leat: LeatClient) -> None:
    sandbox.faults.set(status=502, only_paths=(f"{API_PREFIX}/orders",))
    assert leat.list_shops()
    with pytest.raises(LeatUnavailable) as info:
        leat.create_and_process_order(order_body("pos-0009", jane(leat)))
    assert info.value.ambiguous is True
    sandbox.faults.clear()


def test_sandbox_read_timeout_is_ambiguous(sandbox: Any) -> None:
    sandbox.faults.set(latency_s=1.0, times=1)
    with (
        LeatClient(sandbox.url, token=sandbox.personal_access_token, timeout_s=0.2) as client,
        pytest.raises(LeatUnavailable) as info,
    ):
        client.list_shops()
    assert info.value.ambiguous is True
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_sandbox_dropped_connection_is_ambiguous(sandbox: Any, leat: LeatClient) -> None:
    sandbox.faults.set(drop_after_receive=True, times=1)
    with pytest.raises(LeatUnavailable) as info:
        leat.create_and_process_order(order_body("pos-0010", jane(leat)))
    assert info.value.ambiguous is True


def test_connection_refused_is_not_ambiguous() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed now: nothing listens on it.
    with (
        LeatClient(f"http://127.0.0.1:{port}", token=PAT, timeout_s=2.0) as client,
        pytest.raises(LeatUnavailable) as info,
    ):
        client.list_shops()
    assert info.value.ambiguous is False
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_sandbox_secrets_never_logged(sandbox: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with sandbox_oauth(sandbox) as client:
        client.list_shops()
        sandbox.expire_tokens()
        client.get_contact(jane(client))
        client.find_contact_by_email(JANE_EMAIL)
    with LeatClient(sandbox.url, token=sandbox.personal_access_token) as client:
        client.list_shops()
    ours = [r for r in caplog.records if not r.name.startswith("appliance.sandbox")]
    everything = "\n".join(f"{r.getMessage()} {r.args!r}" for r in ours)
    assert sandbox.oauth_client_secret not in everything
    assert sandbox.personal_access_token not in everything
    assert "Bearer " not in everything
    mine = [r.getMessage() for r in ours if r.name.startswith("appliance.leat.")]
    assert mine  # the client does log its calls
    assert not [m for m in mine if JANE_EMAIL in m]


def test_sandbox_list_vouchers_of_a_contact(leat: LeatClient) -> None:
    vouchers = leat.list_vouchers(contact_uuid=jane(leat))
    assert "WELCOME-JANE" in {v.code for v in vouchers}
    assert all(v.contact is not None for v in vouchers)
    active = leat.list_vouchers(contact_uuid=jane(leat), status="ACTIVE")
    assert {v.status for v in active} == {"ACTIVE"}


# --------------------------------------------------- sandbox: answers Leat does not document


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"message": "Order not found.", "code": 9404, "status_code": 404}),
        (400, {"message": "Bestelling niet gevonden.|Order not found.", "code": 9404,
               "status_code": 400}),
        (400, {"message": "Model not found.", "code": 60013, "status_code": 400}),
    ],
)
def test_sandbox_find_order_not_found_answers(
    sandbox: Any, leat: LeatClient, status: int, body: dict[str, Any]
) -> None:
    assert leat.find_order("never-sent") is None  # the sandbox's own answer
    sandbox.faults.set(status=status, body=body, only_paths=("/orders/find",))
    assert leat.find_order("never-sent") is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, "<html><body>Not Found</body></html>"),  # a bare 404 page: wrong URL or route
        (404, {"message": "Route not found"}),  # no Leat code
        (400, {"message": "Contact not found.", "code": 55031, "status_code": 400}),
        (400, {"message": "Invalid input.", "code": 1003, "status_code": 400}),
    ],
)
def test_sandbox_find_order_raises_on_other_answers(
    sandbox: Any, leat: LeatClient, status: int, body: object
) -> None:
    sandbox.faults.set(status=status, body=body, only_paths=("/orders/find",))
    with pytest.raises(LeatRejected) as info:
        leat.find_order("pos-1")
    assert info.value.status_code == status


def test_sandbox_rejection_keeps_errors_as_lists_or_strings(sandbox: Any, leat: LeatClient) -> None:
    body = {
        "message": "Invalid input.",
        "code": 1003,
        "status_code": 400,
        "errors": {
            "external_identifier": ["The external identifier has already been taken."],
            "status": "The selected status is invalid.",  # a plain string (SDK Error.php)
            "junk": [1, None],
            "x" * 2000: ["long"],
        },
    }
    sandbox.faults.set(status=400, body=body, only_paths=("/orders",))
    error = rejected(1003, lambda: leat.create_and_process_order(order_body("E-1", "c")))
    assert error.leat_message == "Invalid input."
    assert error.errors["external_identifier"] == (
        "The external identifier has already been taken.",
    )
    assert error.errors["status"] == ("The selected status is invalid.",)
    assert "junk" not in error.errors
    assert all(len(key) <= 500 for key in error.errors)
    # The sandbox's own validation answer carries `errors` too.
    sandbox.faults.clear()
    error = rejected(1003, lambda: leat.create_and_process_order({"status": "COMPLETED"}))
    assert "external_identifier" in error.errors


# ------------------------------------ sandbox: the calls of issue 8 (POS commands), stateful

COFFEE = "e1d2c3b4-0000-4a00-9000-000000000011"
CROISSANT = "e1d2c3b4-0000-4a00-9000-000000000012"
LUNCH = "e1d2c3b4-0000-4a00-9000-000000000013"
SPRING = "d0d0d0d0-0000-4d00-8000-000000000001"


def seed_with(**changes: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The bundled seed with `changes[kind](record)` applied to the records of each kind."""
    from appliance.sandbox.seed import BUNDLED_SEED

    seed: dict[str, Any] = json.loads(BUNDLED_SEED.read_text(encoding="utf-8"))
    for kind, change in changes.items():
        for record in seed[kind]:
            change(record)
    return seed


@pytest.fixture
def limits() -> Iterator[Any]:
    """A sandbox where Jane is rich, lunch has one left, coffee is limited to one claim per
    contact, the croissant is inactive and SPRING-2X7Q is deactivated."""
    from appliance.sandbox.server import LeatSandbox

    def contact(c: dict[str, Any]) -> None:
        if c["email"] == JANE_EMAIL:
            c["credit_balance"] = 5000

    def reward(r: dict[str, Any]) -> None:
        r.update({LUNCH: {"stock": 1}, COFFEE: {"claim_limit": 1},
                  CROISSANT: {"is_active": False}}.get(r["uuid"], {}))

    def voucher(v: dict[str, Any]) -> None:
        if v["uuid"] == SPRING:
            v["status"] = "DEACTIVATED"

    with LeatSandbox(seed_with(contacts=contact, rewards=reward, vouchers=voucher)) as server:
        yield server


def test_sandbox_reward_redeem_rejections_and_reversal_restores(limits: Any) -> None:
    with LeatClient(limits.url, token=limits.personal_access_token, shop_uuid=SHOP) as leat:
        uuid = jane(leat)
        lunch = leat.create_reward_reception(contact_uuid=uuid, reward_uuid=LUNCH)
        assert (lunch.credits, lunch.credit_balance) == (-2000, 3000)
        rejected(1018, lambda: leat.create_reward_reception(contact_uuid=uuid, reward_uuid=LUNCH))
        back = leat.reverse_reward_reception(lunch.uuid)  # points and stock come back
        assert (back.credits, back.credit_balance) == (2000, 5000)
        assert leat.get_credit_balance(uuid) == 5000
        rejected(1003, lambda: leat.reverse_reward_reception(lunch.uuid))  # only once
        leat.create_reward_reception(contact_uuid=uuid, reward_uuid=LUNCH)
        coffee = leat.create_reward_reception(contact_uuid=uuid, reward_uuid=COFFEE)
        rejected(1019, lambda: leat.create_reward_reception(contact_uuid=uuid, reward_uuid=COFFEE))
        leat.reverse_reward_reception(coffee.uuid)  # a reversed claim no longer counts
        leat.create_reward_reception(contact_uuid=uuid, reward_uuid=COFFEE)
        rejected(1052, lambda: leat.create_reward_reception(contact_uuid=uuid,
                                                             reward_uuid=CROISSANT))
        assert leat.get_credit_balance(uuid) == 5000 - 2000 - 50
        sam = leat.find_contact_identifier(SAM_CARD).contact
        assert sam is not None
        rejected(1017, lambda: leat.create_reward_reception(contact_uuid=sam.uuid,
                                                             reward_uuid=COFFEE))
        rejected(55031, lambda: leat.create_reward_reception(contact_uuid=NO_SUCH,
                                                              reward_uuid=COFFEE))
        rejected(80012, lambda: leat.lock_voucher(SPRING))
        rejected(80012, lambda: leat.redeem_voucher(code="SPRING-2X7Q", contact_uuid=uuid))


def test_sandbox_collect_and_collect_reverse_keep_points(sandbox: Any, leat: LeatClient) -> None:
    uuid = jane(leat)
    reception = leat.create_reward_reception(contact_uuid=uuid, reward_uuid=CROISSANT)
    assert leat.get_credit_balance(uuid) == 1250 - 30  # points move when it is pre-redeemed
    collected = leat.collect_reward(reception.uuid)
    mine = {c.uuid: c for c in leat.list_collectable_rewards(uuid)}
    assert mine[reception.uuid].has_been_collected is True
    rejected(1003, lambda: leat.collect_reward(reception.uuid))  # collected already
    rejected(1003, lambda: leat.reverse_reward_reception(reception.uuid))  # collected first
    assert leat.reverse_collected_reward(collected.uuid).status == "REVERSED"
    rejected(80300, lambda: leat.reverse_collected_reward(collected.uuid))  # only once
    mine = {c.uuid: c for c in leat.list_collectable_rewards(uuid)}
    assert mine[reception.uuid].has_been_collected is False
    assert leat.get_credit_balance(uuid) == 1250 - 30  # collecting never moves points
    sandbox.advance_clock(31 * 86400)  # the croissant expires after 30 days
    rejected(80300, lambda: leat.collect_reward(reception.uuid))
    assert leat.reverse_reward_reception(reception.uuid).credit_balance == 1250
    assert reception.uuid not in {c.uuid for c in leat.list_collectable_rewards(uuid)}


def test_sandbox_voucher_lock_expires_after_an_hour(sandbox: Any, leat: LeatClient) -> None:
    uuid = jane(leat)
    lock = leat.lock_voucher(SPRING)
    assert lock.system_release_at is not None and lock.locked_at is not None
    assert lock.system_release_at - lock.locked_at == timedelta(hours=1)
    sandbox.advance_clock(59 * 60)
    assert leat.find_voucher("SPRING-2X7Q").status == "LOCKED"
    rejected(80017, lambda: leat.lock_voucher(SPRING))
    rejected(80017, lambda: leat.validate_voucher(SPRING, contact_uuid=uuid))
    rejected(80017, lambda: leat.redeem_voucher(code="SPRING-2X7Q", contact_uuid=uuid))
    sandbox.advance_clock(60)
    assert leat.find_voucher("SPRING-2X7Q").status == "ACTIVE"
    rejected(1003, lambda: leat.release_voucher(SPRING, lock.release_key))  # lapsed
    redemption = leat.redeem_voucher(code="SPRING-2X7Q", contact_uuid=uuid)  # no key needed
    assert redemption.voucher.status == "REDEEMED"


def test_sandbox_voucher_release_key_redeem_reverse_rejections(leat: LeatClient) -> None:
    uuid = jane(leat)
    lock = leat.lock_voucher(SPRING)
    error = rejected(1003, lambda: leat.release_voucher(SPRING, "not-the-key"))
    assert "release_key" in error.errors
    assert leat.find_voucher("SPRING-2X7Q").status == "LOCKED"  # a wrong key changes nothing
    assert leat.release_voucher(SPRING, lock.release_key).status == "ACTIVE"
    rejected(1003, lambda: leat.release_voucher(SPRING, lock.release_key))  # not locked now
    redemption = leat.redeem_voucher(code="SPRING-2X7Q", contact_uuid=uuid)  # without a lock
    rejected(80005, lambda: leat.lock_voucher(SPRING))
    rejected(80005, lambda: leat.validate_voucher(SPRING, contact_uuid=uuid))
    leat.reverse_voucher_redemption(redemption_uuid=redemption.redemption_uuid)
    assert leat.find_voucher("SPRING-2X7Q").status == "ACTIVE"  # the reversal restores it
    rejected(1003, lambda: leat.reverse_voucher_redemption(voucher_uuid=SPRING))  # only once
    rejected(80004, lambda: leat.lock_voucher(NO_SUCH))
    old = leat.find_voucher("OLD-2024")
    rejected(80006, lambda: leat.lock_voucher(old.uuid))
    rejected(80006, lambda: leat.release_voucher(old.uuid, "any"))


def test_sandbox_points_preview_simulate_and_calculate(leat: LeatClient) -> None:
    uuid = jane(leat)
    assert leat.simulate_order(order_body("preview-1", uuid, amount=2599)) == 25
    anonymous = order_body("preview-2", uuid, amount=1000)
    del anonymous["contact"]  # a basket before the customer is known
    assert leat.simulate_order(anonymous) == 10
    assert leat.find_order("preview-1") is None  # a simulation stores nothing
    assert leat.get_credit_balance(uuid) == 1250
    leat.create_and_process_order(order_body("preview-1", uuid, amount=2599))
    assert leat.simulate_order(order_body("preview-1", uuid, amount=2599)) == 25
    rejected(55031, lambda: leat.simulate_order(order_body("preview-3", NO_SUCH)))
    rejected(1003, lambda: leat.simulate_order({"contact": {"uuid": uuid}}))
    assert leat.calculate_credits(unit_value=25.99, contact_uuid=uuid) == 25


def test_sandbox_loyalty_transactions_list_and_filters(sandbox: Any, leat: LeatClient) -> None:
    uuid = jane(leat)
    assert leat.list_loyalty_transactions(contact_uuid=uuid) == []
    coffee = leat.create_reward_reception(contact_uuid=uuid, reward_uuid=COFFEE,
                                          contact_identifier_value=JANE_CARD)
    sandbox.advance_clock(60)
    since = datetime.now(UTC) + timedelta(seconds=30)
    back = leat.reverse_reward_reception(coffee.uuid)
    sandbox.advance_clock(60)
    points = leat.create_credit_reception(contact_uuid=uuid, credits=7)
    newest = leat.list_loyalty_transactions(contact_uuid=uuid)
    assert [(t.uuid, t.type, t.credits) for t in newest] == [
        (points.uuid, "credit_reception", 7), (back.uuid, "credit_reception", 50),
        (coffee.uuid, "reward_reception", -50)]
    spent = newest[-1]
    assert (spent.reward_uuid, spent.contact_uuid, spent.shop_uuid) == (COFFEE, uuid, SHOP)
    assert spent.contact_identifier == JANE_CARD
    assert newest[0].credit_balance == 1257
    oldest = leat.list_loyalty_transactions(contact_uuid=uuid, newest_first=False)
    assert [t.uuid for t in oldest] == [t.uuid for t in reversed(newest)]
    rewards = leat.list_loyalty_transactions(contact_uuid=uuid, kind="reward_receptions")
    assert [t.uuid for t in rewards] == [coffee.uuid]
    credits = leat.list_loyalty_transactions(contact_uuid=uuid, kind="credit_receptions")
    assert [t.uuid for t in credits] == [points.uuid, back.uuid]
    later = leat.list_loyalty_transactions(contact_uuid=uuid, created_after=since)
    assert [t.uuid for t in later] == [points.uuid, back.uuid]
    assert [t.uuid for t in leat.list_loyalty_transactions(contact_uuid=uuid, limit=1, page=2)
            ] == [back.uuid]
    assert leat.list_loyalty_transactions(shop_uuid=SHOP)[0].uuid == points.uuid
    sam = leat.find_contact_identifier(SAM_CARD).contact
    assert sam is not None
    assert leat.list_loyalty_transactions(contact_uuid=sam.uuid) == []
    rejected(55031, lambda: leat.list_loyalty_transactions(contact_uuid=NO_SUCH))
    rejected(1008, lambda: leat.list_loyalty_transactions(shop_uuid=NO_SUCH))
    with pytest.raises(ValueError, match="kind"):
        leat.list_loyalty_transactions(kind="orders")


def test_sandbox_dropped_value_calls_happened_and_can_be_reconciled(
    sandbox: Any, leat: LeatClient
) -> None:
    """drop_after_receive: Leat acted, the answer was lost; what Leat can be asked tells."""
    uuid = jane(leat)

    def dropped(path: str, call: Callable[[], object]) -> None:
        sandbox.faults.set(drop_after_receive=True, only_paths=(path,), times=1)
        with pytest.raises(LeatUnavailable) as info:
            call()
        assert info.value.ambiguous is True

    before = datetime.now(UTC) - timedelta(seconds=1)
    dropped("/reward-receptions",
            lambda: leat.create_reward_reception(contact_uuid=uuid, reward_uuid=COFFEE))
    assert leat.get_credit_balance(uuid) == 1200  # it happened: the balance says so, and
    spent = leat.list_loyalty_transactions(contact_uuid=uuid, kind="reward_receptions",
                                           created_after=before)
    assert [(t.reward_uuid, t.credits) for t in spent] == [(COFFEE, -50)]  # the list names it
    dropped("/reward-receptions",
            lambda: leat.create_reward_reception(contact_uuid=uuid, reward_uuid=CROISSANT))
    waiting = [c for c in leat.list_collectable_rewards(uuid)
               if c.created_at is not None and c.created_at >= before]
    assert [c.has_been_collected for c in waiting] == [False]
    dropped("/collectable-rewards/collect",
            lambda: leat.collect_reward(waiting[0].uuid))
    assert {c.uuid: c.has_been_collected for c in leat.list_collectable_rewards(uuid)
            }[waiting[0].uuid] is True
    dropped("/vouchers/", lambda: leat.lock_voucher(SPRING))
    assert leat.find_voucher("SPRING-2X7Q").status == "LOCKED"  # the release key is lost:
    sandbox.advance_clock(3600)  # the voucher stays locked until Leat releases it
    assert leat.find_voucher("SPRING-2X7Q").status == "ACTIVE"
    dropped("/vouchers/redeem",
            lambda: leat.redeem_voucher(code="SPRING-2X7Q", contact_uuid=uuid))
    assert leat.find_voucher("SPRING-2X7Q").status == "REDEEMED"
    dropped("/vouchers/", lambda: leat.reverse_voucher_redemption(voucher_uuid=SPRING))
    assert leat.find_voucher("SPRING-2X7Q").status == "ACTIVE"


def test_sandbox_loyalty_transactions_filtered_again_by_the_client(
    sandbox: Any, leat: LeatClient
) -> None:
    """A Leat that ignored `created_at[gte]` and `type` (LD-only filters) is caught."""
    uuid = jane(leat)
    leat.create_reward_reception(contact_uuid=uuid, reward_uuid=COFFEE)
    sandbox.advance_clock(60)
    since = datetime.now(UTC) + timedelta(seconds=30)
    given = leat.create_credit_reception(contact_uuid=uuid, credits=3)
    item = {"type": "credit_reception", "credits": 3}
    old = {"uuid": "old", "type": "reward_reception", "credits": -50,
           "created_at": "2020-01-01T00:00:00+00:00", "contact": {"uuid": uuid}}
    other = {"uuid": "other", **item, "contact": {"uuid": NO_SUCH}}
    mine = {"uuid": given.uuid, **item, "contact": {"uuid": uuid}}
    sandbox.faults.set(status=200, body={"data": [mine, old, other], "meta": {}},
                       only_paths=("/loyalty-transactions",))
    found = leat.list_loyalty_transactions(contact_uuid=uuid, created_after=since,
                                           kind="credit_receptions")
    assert [t.uuid for t in found] == [given.uuid]
