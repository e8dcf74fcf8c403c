"""The Leat sandbox over real HTTP: every route, state changes, OAuth, faults, control API.

Tests named `..._assumption` pin behaviour the Leat sources leave open (docs/sandbox.md);
the sandbox chose it, marked `ASSUMPTION:` in its code.
"""

from __future__ import annotations

import ast
import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import SandboxClock as Clock

from appliance.sandbox import contacts as sandbox_contacts
from appliance.sandbox.seed import BUNDLED_SEED, SeedError
from appliance.sandbox.server import LeatSandbox

API = "/api/v3/oauth/clients"
SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"
JANE = "c0a80101-1a2b-4c3d-8e4f-000000000001"
SAM = "c0a80101-1a2b-4c3d-8e4f-000000000002"
COFFEE = "e1d2c3b4-0000-4a00-9000-000000000011"
CROISSANT = "e1d2c3b4-0000-4a00-9000-000000000012"
LUNCH = "e1d2c3b4-0000-4a00-9000-000000000013"
WAITING = "a5b6c7d8-0000-4b00-8000-000000000001"
SPRING = "d0d0d0d0-0000-4d00-8000-000000000001"
GIFTCARD = "9c9c9c9c-0000-4f00-8000-000000000001"
EXPIRED_CARD = "9c9c9c9c-0000-4f00-8000-000000000003"
EMPTY_CARD = "9c9c9c9c-0000-4f00-8000-000000000002"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
ATOM = "%Y-%m-%dT%H:%M:%S+00:00"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> Iterator[LeatSandbox]:
    with LeatSandbox(clock=clock) as server:
        yield server


@pytest.fixture
def api(sandbox: LeatSandbox) -> Iterator[httpx.Client]:
    """A client of the API prefix with the seed's personal access token."""
    headers = {"Authorization": f"Bearer {sandbox.personal_access_token}"}
    with httpx.Client(base_url=sandbox.url + API, headers=headers, timeout=5) as client:
        yield client


@pytest.fixture
def root(sandbox: LeatSandbox) -> Iterator[httpx.Client]:
    """A client of the server root without credentials (token and control paths)."""
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    """`data` of a successful Leat response."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "meta"}
    return body["data"]


def err(response: httpx.Response, code: int, status: int = 400) -> dict[str, Any]:
    """The Leat error body, checked for `code`."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status_code"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def order(ext: str, *, contact: str | None = JANE, lines: list[dict[str, Any]] | None = None,
          **extra: Any) -> dict[str, Any]:
    """A create-and-process body: by default one line of 25.00."""
    body: dict[str, Any] = {
        "external_identifier": ext, "status": "COMPLETED", "payment_status": "PAID",
        "total_order_amount": 2500, "business_profile": {"uuid": SHOP},
        "line_items": lines if lines is not None else [
            {"external_identifier": f"{ext}-1", "name": "Beans", "quantity": 1, "price": 2500,
             "total_amount": 2500, "product": {"external_identifier": "BEANS"}}],
        **extra,
    }
    if contact is not None:
        body["contact"] = {"uuid": contact}
    return body


def balance(api: httpx.Client, contact: str = JANE) -> int:
    value: int = ok(api.get(f"/contacts/{contact}/credit-balance"))["balance"]
    return value


# ------------------------------------------------------------------- seed and basics


def test_sandbox_seed_values(sandbox: LeatSandbox, api: httpx.Client) -> None:
    assert sandbox.personal_access_token.startswith("sandbox-")
    assert len(sandbox.personal_access_token) == 53
    assert (sandbox.oauth_client_id, sandbox.oauth_client_secret) == ("1", "sandbox-secret")
    assert sandbox.url.startswith("http://127.0.0.1:")
    shops = ok(api.get("/shops"))
    assert shops == [{"id": 1, "uuid": SHOP, "name": "Demo Coffee Bar", "type": "physical",
                      "reference": "DEMO-01"}]
    assert ok(api.get(f"/shops/{SHOP}"))["name"] == "Demo Coffee Bar"
    err(api.get(f"/shops/{UNKNOWN}"), 1008)
    program = ok(api.get("/loyalty-program"))
    assert (program["name"], program["custom_credit_name"]) == ("Demo Rewards", "beans")
    assert ok(api.get("/units"))[0]["name"] == "purchase_amount"
    assert ok(api.get("")) == {}


def test_sandbox_seed_validation_names_every_bad_field(tmp_path: Path) -> None:
    seed = json.loads(BUNDLED_SEED.read_text(encoding="utf-8"))
    seed["contacts"][0]["email"] = 42
    seed["contact_identifiers"][0]["contact"] = UNKNOWN
    del seed["shops"][0]["name"]
    with pytest.raises(SeedError) as info:
        LeatSandbox(seed)
    problems = info.value.problems
    assert "seed.contacts[0].email: expected a non-empty string, got 42" in problems
    assert "seed.shops[0].name: missing" in problems
    assert any(p.startswith("seed.contact_identifiers[0]: unknown contact") for p in problems)
    bad = tmp_path / "seed.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(SeedError, match="not JSON"):
        LeatSandbox(bad)
    with pytest.raises(SeedError, match="cannot read"):
        LeatSandbox(tmp_path / "missing.json")


def test_sandbox_rate_limit_headers_decrease(api: httpx.Client) -> None:
    first = api.get("/shops")
    second = api.get("/nope")  # every API response carries them, errors included
    assert first.headers["X-RateLimit-Limit"] == second.headers["X-RateLimit-Limit"] == "5000"
    assert int(second.headers["X-RateLimit-Remaining"]) < int(
        first.headers["X-RateLimit-Remaining"]
    )


def test_sandbox_routes_404_405_and_trailing_slash(api: httpx.Client, root: httpx.Client
                                                   ) -> None:
    assert api.get("/nope").status_code == 404
    assert root.get("/api/v2/oauth/clients").status_code == 404
    assert api.delete("/shops").status_code == 405
    assert ok(api.get("/shops/")) == ok(api.get("/shops"))


# ------------------------------------------------------------------------------ auth


def test_sandbox_unauthenticated_shape(root: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = root.get(API + "/shops", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"message": "Unauthenticated."}


def test_sandbox_oauth_token_issue_expiry_and_expire_tokens(
    sandbox: LeatSandbox, root: httpx.Client, clock: Clock
) -> None:
    form = {"grant_type": "client_credentials", "client_id": "1",
            "client_secret": "sandbox-secret"}
    issued = root.post("/oauth/token", data=form)  # form-encoded, as the PHP SDK sends it
    assert issued.status_code == 200
    token = issued.json()
    assert (token["token_type"], token["expires_in"]) == ("Bearer", 3600)
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert root.get(API + "/shops", headers=bearer).status_code == 200
    clock.advance(seconds=3600)
    assert root.get(API + "/shops", headers=bearer).status_code == 401
    again = root.post("/oauth/token", json={**form, "client_id": 1}).json()  # JSON, numeric id
    bearer = {"Authorization": f"Bearer {again['access_token']}"}
    assert root.get(API + "/shops", headers=bearer).status_code == 200
    sandbox.expire_tokens()
    assert root.get(API + "/shops", headers=bearer).json() == {"message": "Unauthenticated."}
    pat = {"Authorization": f"Bearer {sandbox.personal_access_token}"}
    assert root.get(API + "/shops", headers=pat).status_code == 200


def test_sandbox_oauth_token_refusals(root: httpx.Client) -> None:
    bad = root.post("/oauth/token", json={"grant_type": "client_credentials", "client_id": "1",
                                          "client_secret": "nope"})
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_client"
    grant = root.post("/oauth/token", json={"grant_type": "password"})
    assert (grant.status_code, grant.json()["error"]) == (400, "unsupported_grant_type")
    assert root.get("/oauth/token").status_code == 405


def test_sandbox_token_lifetime_is_configurable(clock: Clock) -> None:
    with LeatSandbox(token_lifetime_s=60, clock=clock) as server, httpx.Client() as client:
        token = client.post(server.url + "/oauth/token", json={
            "grant_type": "client_credentials", "client_id": "1",
            "client_secret": "sandbox-secret"}).json()
        assert token["expires_in"] == 60


# ----------------------------------------------------------- identifiers and contacts


def test_sandbox_contact_identifiers(api: httpx.Client) -> None:
    def find(value: str) -> httpx.Response:
        return api.get("/contact-identifiers/find", params={"contact_identifier_value": value})

    card = ok(find("LC-7F3K9Q2M"))
    assert card == {"name": "Loyalty Card", "value": "LC-7F3K9Q2M", "active": True,
                    "contact": {"uuid": JANE, "email": "jane.doe@example.com"}}
    assert ok(find("LC-UNLINKED7"))["contact"] is None
    err(find("LC-NOPE0000"), 60003)
    err(find("LC-INACTIVE9"), 60004)
    missing = err(api.get("/contact-identifiers/find"), 1003)
    assert "contact_identifier_value" in missing["errors"]


def test_sandbox_contacts_balances_tier(api: httpx.Client) -> None:
    jane = ok(api.get(f"/contacts/{JANE}"))
    assert (jane["email"], jane["credit_balance"]["balance"]) == ("jane.doe@example.com", 1250)
    assert jane["prepaid_balance"]["balance_in_cents"] == 2000
    assert jane["current_values"]["firstname"] == "Jane"
    assert jane["tier"]["name"] == "Gold"
    err(api.get(f"/contacts/{UNKNOWN}"), 55031)
    assert ok(api.get("/contacts/find-one-by", params={"email": "Sam.Lee@example.com"}))[
        "uuid"] == SAM
    err(api.get("/contacts/find-one-by", params={"email": "nobody@example.com"}), 55031)
    err(api.get("/contacts/find-one-by", params={"email": "not-an-email"}), 1003)
    assert balance(api) == 1250
    assert ok(api.get(f"/contacts/{JANE}/prepaid-balance")) == {
        "balance_in_cents": 2000, "balance": "€20.00"}
    assert ok(api.get(f"/contacts/{SAM}/tier"))["name"] == "Bronze"
    err(api.get(f"/contacts/{UNKNOWN}/tier"), 55031)
    err(api.get(f"/contacts/{UNKNOWN}/prepaid-balance"), 55031)
    err(api.get(f"/contacts/{UNKNOWN}/credit-balance"), 55031)


def test_sandbox_find_or_create_contact(api: httpx.Client) -> None:
    created = ok(api.get("/contacts/find-or-create", params={"email": "new@example.com"}))
    assert created["credit_balance"]["balance"] == 0
    again = ok(api.get("/contacts/find-or-create", params={"email": "new@example.com"}))
    assert again["uuid"] == created["uuid"]
    err(api.get("/contacts/find-or-create"), 1003)


def test_sandbox_tier_of_contact_without_one_is_nameless_assumption(api: httpx.Client) -> None:
    # As the official PHP SDK reads it (TierMapper: an empty name is "no tier"), not null.
    created = ok(api.get("/contacts/find-or-create", params={"email": "new@example.com"}))
    tier = ok(api.get(f"/contacts/{created['uuid']}/tier"))
    assert isinstance(tier, dict)
    assert tier["name"] is None
    assert "media" in tier
    assert created["tier"] == tier


# --------------------------------------------------------------------------- rewards


def test_sandbox_rewards_unsorted_with_attributes(api: httpx.Client) -> None:
    rewards = ok(api.get("/rewards", params={"shop_uuid": SHOP, "contact_uuid": SAM}))
    assert [r["title"] for r in rewards] == ["Cup of coffee", "Lunch for two", "Croissant"]
    coffee = rewards[0]
    assert (coffee["reward_type"], coffee["type"], coffee["required_credits"]) == (
        "PHYSICAL", "PHYSICAL", 50)
    assert (coffee["discount_type"], coffee["product_code"]) == ("free_item", "COFFEE-REG")
    assert rewards[2]["pre_redeemable"] is True
    err(api.get("/rewards", params={"shop_uuid": UNKNOWN}), 1008)
    err(api.get("/rewards", params={"contact_uuid": UNKNOWN}), 55031)
    assert ok(api.get(f"/rewards/{LUNCH}"))["stock"] == 5
    err(api.get(f"/rewards/{UNKNOWN}"), 6003)


def test_sandbox_reward_reception_moves_points_and_reverses(api: httpx.Client) -> None:
    body = {"contact_uuid": JANE, "reward_uuid": COFFEE, "shop_uuid": SHOP,
            "contact_identifier_value": "LC-7F3K9Q2M"}
    reception = ok(api.post("/reward-receptions", json=body))
    assert (reception["type"], reception["credits"]) == ("reward_reception", -50)
    assert reception["contact"]["credit_balance"]["balance"] == 1200
    assert reception["has_been_collected"] is False
    assert "channel" in reception
    assert reception["contact_identifier"]["value"] == "LC-7F3K9Q2M"
    assert reception["created_at"] == "2026-11-22T09:00:00+00:00"
    assert balance(api) == 1200
    back = ok(api.post(f"/reward-receptions/{reception['uuid']}/reverse"))
    assert (back["type"], back["credits"]) == ("credit_reception", 50)
    assert balance(api) == 1250
    err(api.post(f"/reward-receptions/{reception['uuid']}/reverse"), 1003)
    err(api.post(f"/reward-receptions/{UNKNOWN}/reverse"), 1003)


def test_sandbox_reward_reception_errors(api: httpx.Client) -> None:
    body = {"contact_uuid": SAM, "reward_uuid": LUNCH, "shop_uuid": SHOP}
    err(api.post("/reward-receptions", json=body), 1017)
    err(api.post("/reward-receptions", json={**body, "reward_uuid": UNKNOWN}), 6003)
    err(api.post("/reward-receptions", json={**body, "contact_uuid": UNKNOWN}), 55031)
    err(api.post("/reward-receptions", json={**body, "shop_uuid": UNKNOWN}), 1008)
    invalid = err(api.post("/reward-receptions", json={"reward_uuid": 5}), 1003)
    assert set(invalid["errors"]) == {"contact_uuid", "reward_uuid", "shop_uuid"}
    assert balance(api, SAM) == 40


def test_sandbox_collectable_rewards_collect_and_reverse(api: httpx.Client, clock: Clock
                                                         ) -> None:
    waiting = ok(api.get("/collectable-rewards", params={"contact_uuid": JANE}))
    assert [(c["uuid"], c["has_been_collected"]) for c in waiting] == [(WAITING, False)]
    assert waiting[0]["reward"]["title"] == "Croissant"
    reception = ok(api.post("/reward-receptions", json={
        "contact_uuid": JANE, "reward_uuid": CROISSANT, "shop_uuid": SHOP}))
    assert reception["expires_at"] == (clock.now + timedelta(days=30)).strftime(ATOM)
    assert len(ok(api.get("/collectable-rewards", params={"contact_uuid": JANE}))) == 2
    collected = ok(api.put(f"/collectable-rewards/collect/{reception['uuid']}"))
    assert set(collected) == {"uuid", "status"}
    assert collected["status"] == "COLLECTED"
    listed = ok(api.get("/collectable-rewards", params={"contact_uuid": JANE}))
    assert {c["uuid"]: c["has_been_collected"] for c in listed}[reception["uuid"]] is True
    err(api.put(f"/collectable-rewards/collect/{UNKNOWN}"), 80300)
    err(api.get("/collectable-rewards", params={"contact_uuid": UNKNOWN}), 55031)
    reversed_ = ok(api.post(f"/collectable-rewards/{collected['uuid']}/reverse"))
    assert reversed_ == {"uuid": collected["uuid"], "status": "REVERSED"}
    err(api.post(f"/collectable-rewards/{collected['uuid']}/reverse"), 80300)
    clock.advance(days=31)
    err(api.put(f"/collectable-rewards/collect/{reception['uuid']}"), 80300)  # expired


def test_sandbox_collect_twice_and_reverse_collected_reception_assumption(
    api: httpx.Client,
) -> None:
    ok(api.put(f"/collectable-rewards/collect/{WAITING}"))
    err(api.put(f"/collectable-rewards/collect/{WAITING}"), 1003)
    reception = ok(api.post("/reward-receptions", json={
        "contact_uuid": JANE, "reward_uuid": CROISSANT, "shop_uuid": SHOP}))
    ok(api.put(f"/collectable-rewards/collect/{reception['uuid']}"))
    err(api.post(f"/reward-receptions/{reception['uuid']}/reverse"), 1003)


# -------------------------------------------------------------------------- vouchers


def find_voucher(api: httpx.Client, code: str) -> dict[str, Any]:
    voucher: dict[str, Any] = ok(api.get("/vouchers/find", params={"code": code}))
    return voucher


def test_sandbox_voucher_find(api: httpx.Client) -> None:
    spring = find_voucher(api, "SPRING-2X7Q")
    assert (spring["uuid"], spring["status"], spring["contact"]) == (SPRING, "ACTIVE", None)
    assert spring["promotion"]["name"] == "Spring 10% off"
    assert spring["promotion"]["discount_type"] == "percentage_discount"
    assert spring["attributes"]["discount_value"] == 10
    assert find_voucher(api, "WELCOME-JANE")["contact"]["uuid"] == JANE
    assert find_voucher(api, "OLD-2024")["status"] == "EXPIRED"
    assert find_voucher(api, "USED-2025")["is_redeemed"] is True
    err(api.get("/vouchers/find", params={"code": "NOPE"}), 80004)
    err(api.get("/vouchers/find"), 1003)


def test_sandbox_voucher_list_paginated_assumption(api: httpx.Client) -> None:
    response = api.get("/vouchers", params={"contact_uuid": JANE})
    assert response.status_code == 200
    body = response.json()
    assert [v["code"] for v in body["data"]] == ["WELCOME-JANE"]
    assert set(body["links"]) == {"first", "last", "prev", "next"}
    assert (body["meta"]["total"], body["meta"]["current_page"]) == (1, 1)
    everything = api.get("/vouchers", params={"limit": 2, "page": 2}).json()
    assert [v["code"] for v in everything["data"]] == ["OLD-2024", "USED-2025"]
    assert (everything["meta"]["last_page"], everything["links"]["next"]) == (2, None)
    expired = api.get("/vouchers", params={"status": "expired"}).json()["data"]
    assert [v["code"] for v in expired] == ["OLD-2024"]
    err(api.get("/vouchers", params={"contact_uuid": UNKNOWN}), 55031)
    err(api.get("/vouchers", params={"limit": 501}), 1003)


def test_sandbox_voucher_lock_release_redeem_reverse(api: httpx.Client) -> None:
    locked = ok(api.post(f"/vouchers/{SPRING}/lock/"))  # the SDK's trailing slash
    assert locked["voucher"] == {"uuid": SPRING, "status": "LOCKED"}
    key = locked["lock"]["release_key"]
    assert locked["lock"]["system_release_at"] == "2026-11-22T10:00:00+00:00"
    assert find_voucher(api, "SPRING-2X7Q")["status"] == "LOCKED"
    err(api.post(f"/vouchers/{SPRING}/lock"), 80017)
    redeem = {"code": "SPRING-2X7Q", "shop_uuid": SHOP, "contact_uuid": SAM}
    err(api.post("/vouchers/redeem", json=redeem), 80017)  # locked, no key
    released = ok(api.post(f"/vouchers/{SPRING}/release/", json={"release_key": key}))
    assert released["voucher"]["status"] == "ACTIVE"
    assert released["lock"]["unlocked_at"] is not None
    key = ok(api.post(f"/vouchers/{SPRING}/lock"))["lock"]["release_key"]
    redeemed = ok(api.post("/vouchers/redeem", json={**redeem, "release_key": key}))
    assert (redeemed["status"], redeemed["is_redeemed"]) == ("REDEEMED", True)
    assert redeemed["redeemed_at"] == "2026-11-22T09:00:00+00:00"
    redemption = redeemed["voucher_redemption"]["uuid"]
    err(api.post("/vouchers/redeem", json=redeem), 80005)
    err(api.post(f"/vouchers/{SPRING}/lock"), 80005)
    back = ok(api.post(f"/vouchers/{redemption}/reverse"))  # by redemption uuid
    assert (back["uuid"], back["status"]) == (SPRING, "ACTIVE")
    again = ok(api.post("/vouchers/redeem", json=redeem))
    assert ok(api.post(f"/vouchers/{SPRING}/reverse"))["status"] == "ACTIVE"  # by voucher uuid
    assert again["voucher_redemption"]["uuid"] != redemption
    err(api.post(f"/vouchers/{UNKNOWN}/reverse"), 80004)


def test_sandbox_voucher_lock_lapses_after_an_hour(api: httpx.Client, clock: Clock) -> None:
    ok(api.post(f"/vouchers/{SPRING}/lock"))
    clock.advance(minutes=59)
    err(api.post(f"/vouchers/{SPRING}/lock"), 80017)
    clock.advance(minutes=1)
    assert find_voucher(api, "SPRING-2X7Q")["status"] == "ACTIVE"
    ok(api.post("/vouchers/redeem", json={"code": "SPRING-2X7Q", "shop_uuid": SHOP,
                                          "contact_uuid": JANE}))


def test_sandbox_voucher_errors(api: httpx.Client) -> None:
    base = {"shop_uuid": SHOP, "contact_uuid": JANE}
    old = find_voucher(api, "OLD-2024")["uuid"]
    err(api.post("/vouchers/redeem", json={**base, "code": "OLD-2024"}), 80006)
    err(api.post(f"/vouchers/{old}/lock"), 80006)
    err(api.post("/vouchers/redeem", json={**base, "code": "USED-2025"}), 80005)
    err(api.post("/vouchers/redeem", json={**base, "code": "NOPE"}), 80004)
    err(api.post(f"/vouchers/{UNKNOWN}/lock"), 80004)
    err(api.post(f"/vouchers/{UNKNOWN}/release", json={"release_key": "x"}), 80004)
    needs_contact = err(api.post("/vouchers/redeem", json={"code": "SPRING-2X7Q",
                                                           "shop_uuid": SHOP}), 1003)
    assert "contact_uuid" in needs_contact["errors"]
    welcome = ok(api.post("/vouchers/redeem", json={"code": "WELCOME-JANE", "shop_uuid": SHOP}))
    assert welcome["contact"]["uuid"] == JANE  # linked: no contact_uuid needed


def test_sandbox_voucher_redeem_requires_shop_assumption(api: httpx.Client) -> None:
    body = err(api.post("/vouchers/redeem", json={"code": "WELCOME-JANE"}), 1003)
    assert "shop_uuid" in body["errors"]


def test_sandbox_voucher_validate_shape_assumption(api: httpx.Client) -> None:
    valid = ok(api.post(f"/vouchers/{SPRING}/validate", json={"shop_uuid": SHOP,
                                                              "contact_uuid": JANE}))
    assert valid["valid"] is True
    assert valid["voucher"]["code"] == "SPRING-2X7Q"
    err(api.post(f"/vouchers/{SPRING}/validate", json={"shop_uuid": SHOP}), 1003)
    old = find_voucher(api, "OLD-2024")["uuid"]
    err(api.post(f"/vouchers/{old}/validate", json={"shop_uuid": SHOP, "contact_uuid": JANE}),
        80006)
    err(api.post(f"/vouchers/{UNKNOWN}/validate", json={"shop_uuid": SHOP}), 80004)
    ok(api.post(f"/vouchers/{SPRING}/lock"))
    err(api.post(f"/vouchers/{SPRING}/validate", json={"shop_uuid": SHOP, "contact_uuid": JANE}),
        80017)
    welcome = find_voucher(api, "WELCOME-JANE")["uuid"]
    err(api.post(f"/vouchers/{welcome}/validate", json={"shop_uuid": SHOP, "contact_uuid": SAM}),
        1003)


def test_sandbox_voucher_release_and_reverse_refusals_assumption(api: httpx.Client) -> None:
    err(api.post(f"/vouchers/{SPRING}/release", json={"release_key": "x"}), 1003)  # not locked
    ok(api.post(f"/vouchers/{SPRING}/lock"))
    err(api.post(f"/vouchers/{SPRING}/release", json={"release_key": "wrong"}), 1003)
    err(api.post(f"/vouchers/{SPRING}/reverse"), 1003)  # never redeemed


# ------------------------------------------------------------------------- giftcards


def test_sandbox_giftcards_find_and_get(api: httpx.Client) -> None:
    card = ok(api.get("/giftcards/find-one-by", params={"hash": "GC-8H2J4K6L8M"}))
    assert (card["uuid"], card["amount_in_cents"], card["active"]) == (GIFTCARD, 2500, True)
    assert {"type", "upgradeable", "hash"} <= set(card)
    assert card["expiration_date"].startswith("2027-")
    assert ok(api.get(f"/giftcards/{GIFTCARD}")) == card
    err(api.get("/giftcards/find-one-by", params={"hash": "GC-NOPE"}), 5001)
    err(api.get(f"/giftcards/{UNKNOWN}"), 5001)
    err(api.get("/giftcards/find-one-by"), 1003)


def test_sandbox_giftcard_pay_and_reverse_only_the_last(api: httpx.Client) -> None:
    def pay(amount: int, card: str = GIFTCARD) -> httpx.Response:
        return api.post("/giftcard-transactions", json={
            "giftcard_uuid": card, "amount_in_cents": amount, "shop_uuid": SHOP})

    first = ok(pay(-1000))
    assert (first["amount_in_cents"], first["card"]["uuid"]) == (-1000, GIFTCARD)
    assert ok(api.get(f"/giftcard-transactions/{first['uuid']}"))["uuid"] == first["uuid"]
    second = ok(pay(-500))
    assert ok(api.get(f"/giftcards/{GIFTCARD}"))["amount_in_cents"] == 1000
    err(api.post(f"/giftcard-transactions/{first['uuid']}/reverse"), 55025)
    back = ok(api.post(f"/giftcard-transactions/{second['uuid']}/reverse"))
    assert back["amount_in_cents"] == 500
    assert ok(api.get(f"/giftcards/{GIFTCARD}"))["amount_in_cents"] == 1500
    err(api.post(f"/giftcard-transactions/{second['uuid']}/reverse"), 55025)  # not last now
    err(api.post(f"/giftcard-transactions/{UNKNOWN}/reverse"), 5010)
    err(api.get(f"/giftcard-transactions/{UNKNOWN}"), 5010)
    err(pay(-1, EMPTY_CARD), 5003)
    err(pay(-100, EXPIRED_CARD), 5002)
    err(pay(-100, UNKNOWN), 5001)
    err(pay(60000), 5008)
    err(pay(0), 1003)
    ok(pay(1000, EMPTY_CARD))  # selling a card: load it


# --------------------------------------------------------------------------- prepaid


def test_sandbox_prepaid_pay_topup_reverse(api: httpx.Client) -> None:
    paid = ok(api.post("/prepaid-transactions", json={
        "amount_in_cents": -500, "contact_uuid": JANE, "shop_uuid": SHOP}))
    assert paid["prepaid_balance"]["balance_in_cents"] == 1500
    assert paid["contact_identifier"] is None
    back = ok(api.post(f"/prepaid-transactions/{paid['uuid']}/reverse"))
    assert (back["amount_in_cents"], back["prepaid_balance"]["balance_in_cents"]) == (500, 2000)
    err(api.post(f"/prepaid-transactions/{paid['uuid']}/reverse"), 1003)
    by_card = ok(api.post("/prepaid-transactions", data={  # form-encoded body
        "amount_in_cents": "300", "contact_identifier_value": "LC-7F3K9Q2M", "shop_uuid": SHOP}))
    assert by_card["contact_identifier"]["value"] == "LC-7F3K9Q2M"
    assert ok(api.get(f"/contacts/{JANE}/prepaid-balance"))["balance_in_cents"] == 2300
    body = {"amount_in_cents": -1, "shop_uuid": SHOP}
    err(api.post("/prepaid-transactions", json={**body, "contact_uuid": UNKNOWN}), 55031)
    err(api.post("/prepaid-transactions",
                 json={**body, "contact_identifier_value": "LC-NOPE0000"}), 60003)
    err(api.post("/prepaid-transactions",
                 json={**body, "contact_identifier_value": "LC-INACTIVE9"}), 60004)
    err(api.post("/prepaid-transactions", json={**body, "contact_uuid": JANE,
                                                "shop_uuid": UNKNOWN}), 1008)
    assert "contact_uuid" in err(api.post("/prepaid-transactions", json=body), 1003)["errors"]


def test_sandbox_prepaid_insufficient_balance_code_assumption(api: httpx.Client) -> None:
    err(api.post("/prepaid-transactions", json={
        "amount_in_cents": -1, "contact_uuid": SAM, "shop_uuid": SHOP}), 9999)
    assert ok(api.get(f"/contacts/{SAM}/prepaid-balance"))["balance_in_cents"] == 0


# -------------------------------------------------------------------------- orders


def test_sandbox_order_create_and_process_then_find_get_list(
    sandbox: LeatSandbox, api: httpx.Client
) -> None:
    lines = [
        {"external_identifier": "l1", "name": "Latte", "quantity": 2, "price": 350,
         "total_amount": 700, "discount_amount": 0,
         "sub_line_items": [{"external_identifier": "l1-s1", "name": "Oat milk", "quantity": 2,
                             "price": 50, "total_amount": 100}]},
        {"external_identifier": "l2", "name": "Cake", "quantity": 1, "price": 450,
         "total_amount": 450},
    ]
    body = order("pos-1", lines=lines, total_order_amount=1450,
                 applied_discounts=[{"external_identifier": "d1", "name": "1 off",
                                     "amount": 100, "applied_to": "ORDER"}],
                 charges=[{"external_identifier": "c1", "name": "Service", "total_amount": 300,
                           "charge_definition": {"external_identifier": "SERVICE_CHARGE"}}])
    result = ok(api.post("/orders/create-and-process", json=body))
    created = result["order"]
    # Points rule: (700 + 100 + 450 - 100 order discount) // 100 = 11; charges excluded.
    assert result["result"] == {"type": "POINTS_TRANSACTION",
                                "data": {"points": 11, "new_balance": 1261}}
    assert balance(api) == 1261
    for key in ("uuid", "external_identifier", "currency", "status", "payment_status",
                "formatted_total_order_amount", "total_charges_amount", "total_discount_amount",
                "total_order_amount", "created_at", "updated_at"):
        assert key in created
    assert (created["order_amount"], created["total_charges_amount"]) == (1250, 300)
    assert created["contact"] == {"uuid": JANE, "email": "jane.doe@example.com"}
    assert created["business_profile"]["uuid"] == SHOP
    assert created["charges"][0]["type"] == "SERVICE_CHARGE"
    found = ok(api.get("/orders/find", params={"external_identifier": "pos-1"}))
    assert found == created == ok(api.get(f"/orders/{created['uuid']}"))
    assert [o["uuid"] for o in ok(api.get("/orders"))] == [created["uuid"]]
    assert [o["sandbox"]["points"] for o in sandbox.orders()] == [11]


def test_sandbox_order_not_found_assumption(api: httpx.Client) -> None:
    missing = err(api.get("/orders/find", params={"external_identifier": "never"}), 9404)
    assert "not found" in missing["message"].lower()
    err(api.get(f"/orders/{UNKNOWN}"), 9404)
    err(api.post(f"/orders/{UNKNOWN}/process"), 9404)
    err(api.get("/orders/find"), 1003)


def test_sandbox_order_repeated_external_identifier_assumption(
    sandbox: LeatSandbox, api: httpx.Client
) -> None:
    ok(api.post("/orders/create-and-process", json=order("pos-dup")))
    repeated = err(api.post("/orders/create-and-process", json=order("pos-dup")), 1003)
    assert "external_identifier" in repeated["errors"]
    err(api.post("/orders", json=order("pos-dup")), 1003)
    assert len(sandbox.orders()) == 1
    assert balance(api) == 1275  # points once


def test_sandbox_order_without_contact_assumption(api: httpx.Client) -> None:
    refused = err(api.post("/orders/create-and-process", json=order("pos-anon", contact=None)),
                  1003)
    assert "contact" in refused["errors"]
    err(api.post("/orders/create-and-process", json=order("pos-x", contact=UNKNOWN)), 55031)
    err(api.post("/orders/create-and-process",
                 json={**order("pos-y"), "business_profile": {"uuid": UNKNOWN}}), 1008)


def test_sandbox_order_validation_errors(api: httpx.Client) -> None:
    body = order("pos-bad", total_order_amount="lots", status="DONE")
    body["line_items"][0]["quantity"] = "two"
    del body["line_items"][0]["name"]
    errors = err(api.post("/orders/create-and-process", json=body), 1003)["errors"]
    assert {"total_order_amount", "status", "line_items.0.quantity",
            "line_items.0.name"} <= set(errors)
    dup_lines = order("pos-dl", lines=[order("x")["line_items"][0]] * 2)
    err(api.post("/orders", json=dup_lines), 1003)


def test_sandbox_order_create_then_process_once_assumption(api: httpx.Client) -> None:
    created = ok(api.post("/orders", json=order("pos-2", total_order_amount=999, lines=[
        {"external_identifier": "a", "name": "Tea", "quantity": 1, "price": 999,
         "total_amount": 999}])))
    assert "result" not in created
    assert balance(api) == 1250
    processed = ok(api.post(f"/orders/{created['uuid']}/process"))
    assert processed == {"type": "POINTS_TRANSACTION", "data": {"points": 9, "new_balance": 1259}}
    err(api.post(f"/orders/{created['uuid']}/process"), 1003)
    assert balance(api) == 1259


def test_sandbox_cancelled_order_earns_nothing_assumption(api: httpx.Client) -> None:
    result = ok(api.post("/orders/create-and-process", json=order("pos-c", status="CANCELLED")))
    assert result["result"]["data"]["points"] == 0


def test_sandbox_order_return_takes_points_back_negative_assumption(
    sandbox: LeatSandbox, api: httpx.Client
) -> None:
    lines = [{"external_identifier": "l1", "name": "Mug", "quantity": 3, "price": 1000,
              "total_amount": 3000},
             {"external_identifier": "l2", "name": "Beans", "quantity": 1, "price": 1050,
              "total_amount": 1050}]
    result = ok(api.post("/orders/create-and-process", json=order("pos-r", lines=lines)))
    assert result["result"]["data"]["points"] == 40  # 4050 // 100
    first = ok(api.post("/order-returns/create-and-process", json={
        "order": {"external_identifier": "pos-r"}, "external_identifier": "ret-1",
        "status": "COMPLETED", "line_items": [{"external_identifier": "l1", "quantity": 1}]}))
    assert first["return"]["order"]["uuid"] == result["order"]["uuid"]
    assert first["return"]["line_item_returns"][0]["quantity"] == 1
    # 1000 of 4050 returned: 40 * 1000 // 4050 = 9 points back.
    assert first["result"] == {"type": "POINTS_TRANSACTION",
                               "data": {"points": -9, "new_balance": 1281}}
    rest = ok(api.post("/order-returns/create-and-process", json={
        "order": {"uuid": result["order"]["uuid"]}, "external_identifier": "ret-2",
        "line_items": [{"external_identifier": "l1", "quantity": 2},
                       {"external_identifier": "l2", "quantity": 1}]}))
    assert rest["result"]["data"]["points"] == -31  # everything returned: all 40 back
    assert balance(api) == 1250
    assert [r["external_identifier"] for r in sandbox.order_returns()] == ["ret-1", "ret-2"]


def test_sandbox_order_return_refusals_assumption(api: httpx.Client) -> None:
    def ret(ext: str, **body: Any) -> httpx.Response:
        return api.post("/order-returns/create-and-process", json={
            "order": {"external_identifier": "pos-q"}, "external_identifier": ext,
            "line_items": [{"external_identifier": "pos-q-1", "quantity": 1}], **body})

    err(ret("ret-early"), 9404)  # the order must exist first
    ok(api.post("/orders/create-and-process", json=order("pos-q")))
    ok(ret("ret-1"))
    err(ret("ret-1"), 1003)  # repeated return external_identifier
    err(ret("ret-2"), 1003)  # nothing left to return
    err(ret("ret-3", line_items=[{"external_identifier": "nope", "quantity": 1}]), 1003)
    err(api.post("/order-returns/create-and-process", json={"external_identifier": "r"}), 1003)


# ---------------------------------------------------------------- credit receptions


def test_sandbox_credit_receptions(api: httpx.Client) -> None:
    calc = ok(api.get("/credit-receptions/calculate",
                      params={"shop_uuid": SHOP, "unit_value": "10.40"}))
    assert calc == {"credits": 10}
    given = ok(api.post("/credit-receptions", json={
        "shop_uuid": SHOP, "contact_uuid": JANE, "unit_value": 10.40,
        "unit_name": "purchase_amount", "pos_transaction_uuid": "pos-tx-1"}))
    assert (given["type"], given["credits"], given["unit_value"]) == (
        "credit_reception", 10, 10.40)
    assert given["channel"]
    assert balance(api) == 1260
    back = ok(api.post(f"/credit-receptions/{given['uuid']}/reverse"))
    assert back["credits"] == -10
    assert balance(api) == 1250
    err(api.post(f"/credit-receptions/{given['uuid']}/reverse"), 1003)
    err(api.post(f"/credit-receptions/{UNKNOWN}/reverse"), 1028)
    base = {"shop_uuid": SHOP, "contact_uuid": JANE, "credits": 5}
    err(api.post("/credit-receptions", json={**base, "contact_uuid": UNKNOWN}), 55031)
    err(api.post("/credit-receptions", json={**base, "shop_uuid": UNKNOWN}), 1008)
    err(api.post("/credit-receptions", json={**base, "unit_name": "visits"}), 60007)
    err(api.post("/credit-receptions", json={"shop_uuid": SHOP, "contact_uuid": JANE}), 1003)
    err(api.get("/credit-receptions/calculate", params={"shop_uuid": UNKNOWN,
                                                        "unit_value": 1}), 1008)


# ------------------------------------------------------------------- input handling


def test_sandbox_rejects_bad_bodies(api: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    err(api.post("/prepaid-transactions", content=b"{nope", headers=headers), 1003)
    err(api.post("/prepaid-transactions", content=b"[1]", headers=headers), 1003)
    typed = err(api.post("/giftcard-transactions", json={
        "giftcard_uuid": ["x"], "amount_in_cents": True, "shop_uuid": SHOP}), 1003)
    assert set(typed["errors"]) == {"giftcard_uuid", "amount_in_cents"}
    big = api.post("/prepaid-transactions", content=b"x" * ((1 << 20) + 1), headers=headers)
    assert big.status_code == 413
    text = api.post("/prepaid-transactions", content=b"hi", headers={"Content-Type": "text/csv"})
    assert text.status_code == 415


def test_sandbox_form_bodies_nest_brackets(api: httpx.Client) -> None:
    form = "&".join([
        "external_identifier=pos-form", "status=COMPLETED", "payment_status=PAID",
        "total_order_amount=500", f"contact[uuid]={JANE}", f"business_profile[uuid]={SHOP}",
        "line_items[0][external_identifier]=a", "line_items[0][name]=Tea",
        "line_items[0][quantity]=1", "line_items[0][price]=500",
        "line_items[0][total_amount]=500",
    ])
    result = ok(api.post("/orders/create-and-process", content=form.encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert result["result"]["data"]["points"] == 5


def test_sandbox_handler_crash_is_500_code_1000(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(sandbox_contacts.Contacts, "units", boom)
    with caplog.at_level(logging.ERROR, logger="appliance.sandbox.server"):
        err(api.get("/units"), 1000, status=500)
    assert "failed" in caplog.text
    assert ok(api.get("/shops"))  # the server lives on


# ---------------------------------------------------------------------------- faults


def test_sandbox_fault_status_and_times_auto_clear(sandbox: LeatSandbox, api: httpx.Client
                                                   ) -> None:
    sandbox.faults.set(status=502, times=2)
    assert api.get("/shops").status_code == 502
    assert sandbox.faults.current().times == 1
    assert api.get("/shops").status_code == 502
    assert not sandbox.faults.current().active()
    assert api.get("/shops").status_code == 200


def test_sandbox_fault_status_acts_on_nothing(sandbox: LeatSandbox, api: httpx.Client) -> None:
    sandbox.faults.set(status=500)
    assert api.post("/orders/create-and-process", json=order("pos-500")).status_code == 500
    sandbox.faults.clear()
    assert sandbox.orders() == []


def test_sandbox_fault_body_bare_page_or_json_and_answers_log(
    sandbox: LeatSandbox, api: httpx.Client, root: httpx.Client
) -> None:
    sandbox.faults.set(status=404, body="<h1>Not Found</h1>", only_paths=("/orders/find",),
                       times=1)
    bare = api.get("/orders/find", params={"external_identifier": "x"})
    assert (bare.status_code, bare.text) == (404, "<h1>Not Found</h1>")
    assert bare.headers["content-type"].startswith("text/html")
    taken = ["The external identifier has already been taken."]
    custom = {"message": "Invalid input.", "code": 1003, "status_code": 400,
              "errors": {"external_identifier": taken}}
    posted = root.post("/_sandbox/faults", json={"status": 400, "body": custom, "times": 1})
    assert posted.status_code == 200
    assert posted.json()["faults"]["body"] == custom
    answer = api.post("/orders/create-and-process", json=order("F-1"))
    assert (answer.status_code, answer.json()) == (400, custom)
    assert sandbox.orders() == []  # not acted on
    assert [a[2] for a in sandbox.answers()] == [404, 400]
    assert root.post("/_sandbox/faults", json={"body": "x"}).status_code == 400  # no status
    with pytest.raises(ValueError, match="body"):
        sandbox.faults.set(status=400, body=["not", "an", "object"])  # type: ignore[arg-type]


def test_sandbox_token_without_expiry(clock: Clock) -> None:
    with LeatSandbox(token_lifetime_s=None, clock=clock) as server, httpx.Client() as client:
        token = client.post(server.url + "/oauth/token", json={
            "grant_type": "client_credentials", "client_id": "1",
            "client_secret": "sandbox-secret"}).json()
        assert "expires_in" not in token
        clock.advance(days=3650)
        shops = client.get(server.url + "/api/v3/oauth/clients/shops",
                           headers={"Authorization": f"Bearer {token['access_token']}"})
        assert shops.status_code == 200
        server.expire_tokens()
        shops = client.get(server.url + "/api/v3/oauth/clients/shops",
                           headers={"Authorization": f"Bearer {token['access_token']}"})
        assert shops.status_code == 401


def test_sandbox_fault_maintenance_503(sandbox: LeatSandbox, api: httpx.Client) -> None:
    sandbox.faults.set(maintenance=True)
    response = api.get("/shops")
    assert response.status_code == 503
    assert "X-RateLimit-Limit" in response.headers


def test_sandbox_fault_rate_limit_429_retry_after(sandbox: LeatSandbox, api: httpx.Client
                                                  ) -> None:
    sandbox.faults.set(rate_limit_retry_after=7, times=1)
    response = api.get("/shops")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert api.get("/shops").status_code == 200


def test_sandbox_fault_only_paths(sandbox: LeatSandbox, api: httpx.Client) -> None:
    sandbox.faults.set(maintenance=True, only_paths=("/orders",))
    assert api.get("/shops").status_code == 200
    assert api.get("/orders").status_code == 503
    sandbox.faults.set(status=500, only_paths=("/oauth/token",))
    assert api.get("/orders").status_code == 200
    assert api.post(sandbox.url + "/oauth/token", json={}).status_code == 500


def test_sandbox_fault_drop_after_receive_still_acts(sandbox: LeatSandbox, api: httpx.Client
                                                     ) -> None:
    sandbox.faults.set(drop_after_receive=True, only_paths=("/orders/create-and-process",),
                       times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/orders/create-and-process", json=order("pos-drop"))
    assert [o["external_identifier"] for o in sandbox.orders()] == ["pos-drop"]
    assert sandbox.orders()[0]["sandbox"]["processed"] is True
    assert ok(api.get("/orders/find", params={"external_identifier": "pos-drop"}))
    assert balance(api) == 1275


def test_sandbox_fault_outage_refuses_before_reading(sandbox: LeatSandbox, api: httpx.Client
                                                     ) -> None:
    sandbox.faults.set(outage=True, times=1)
    with pytest.raises(httpx.TransportError):
        api.post("/orders/create-and-process", json=order("pos-outage"))
    assert sandbox.orders() == []
    assert ("POST", API + "/orders/create-and-process") not in sandbox.requests()
    assert not sandbox.faults.current().active()  # times=1 used up
    assert api.get("/shops").status_code == 200


def test_sandbox_fault_outage_spares_the_control_path(sandbox: LeatSandbox, root: httpx.Client
                                                      ) -> None:
    sandbox.faults.set(outage=True)
    with pytest.raises(httpx.TransportError):
        root.get(API + "/shops")
    assert root.delete("/_sandbox/faults").status_code == 200
    assert root.get(API + "/shops").status_code == 401  # reachable again (no token here)


def test_sandbox_fault_latency_answers_after_acting(sandbox: LeatSandbox) -> None:
    sandbox.faults.set(latency_s=30, only_paths=("/orders",))
    headers = {"Authorization": f"Bearer {sandbox.personal_access_token}"}
    with httpx.Client(base_url=sandbox.url + API, headers=headers, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):  # the answer is late ...
            client.post("/orders/create-and-process", json=order("pos-slow"))
        assert client.get("/shops").status_code == 200  # ... and blocks nothing else
    assert [o["external_identifier"] for o in sandbox.orders()] == ["pos-slow"]  # but done
    assert sandbox.faults.current().latency_s == 30


def test_sandbox_fault_latency_small_still_answers(sandbox: LeatSandbox, api: httpx.Client
                                                   ) -> None:
    sandbox.faults.set(latency_s=0.01, times=1)
    assert api.get("/shops").status_code == 200
    assert not sandbox.faults.current().active()


def test_sandbox_faults_validate_values(sandbox: LeatSandbox) -> None:
    for bad in ({"status": 200}, {"latency_s": -1}, {"times": 0}, {"only_paths": ("orders",)},
                {"maintenance": "yes"}, {"status": 302, "body": {}},
                {"status": 600, "body": {}}):
        with pytest.raises(ValueError):
            sandbox.faults.set(**bad)
    sandbox.faults.set(status=200, body={"data": [], "meta": {}})  # a 2xx needs a body


def test_sandbox_faults_apply_concurrently_without_blocking(sandbox: LeatSandbox) -> None:
    results: list[int] = []

    def call() -> None:
        with httpx.Client(timeout=5) as client:
            response = client.get(sandbox.url + API + "/shops", headers={
                "Authorization": f"Bearer {sandbox.personal_access_token}"})
            results.append(response.status_code)

    sandbox.faults.set(status=500, times=3)
    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 200, 500, 500, 500]


# ------------------------------------------------------------------------ control API


def test_sandbox_control_api_faults(sandbox: LeatSandbox, root: httpx.Client) -> None:
    assert root.get("/_sandbox/faults").json()["faults"]["status"] is None
    set_ = root.post("/_sandbox/faults", json={"maintenance": True, "only_paths": ["/orders"],
                                               "times": 1})
    assert set_.status_code == 200
    assert sandbox.faults.current().only_paths == ("/orders",)
    assert root.get("/_sandbox/faults").json()["faults"]["maintenance"] is True
    assert root.post("/_sandbox/faults", json={"nope": 1}).status_code == 400
    assert root.post("/_sandbox/faults", json={"status": "x"}).status_code == 400
    assert root.post("/_sandbox/faults", content=b"{").status_code == 400
    assert root.delete("/_sandbox/faults").json()["faults"]["maintenance"] is False
    assert root.get("/_sandbox/nope").status_code == 404


def test_sandbox_control_api_orders_requests_reset(
    sandbox: LeatSandbox, api: httpx.Client, root: httpx.Client
) -> None:
    ok(api.post("/orders/create-and-process", json=order("pos-ctl")))
    listed = root.get("/_sandbox/orders").json()
    assert [o["external_identifier"] for o in listed["orders"]] == ["pos-ctl"]
    assert listed["order_returns"] == []
    assert ["POST", API + "/orders/create-and-process"] in root.get(
        "/_sandbox/requests").json()["requests"]
    assert balance(api) == 1275
    assert root.post("/_sandbox/reset").json() == {"reset": True}
    assert balance(api) == 1250
    assert sandbox.orders() == []


def test_sandbox_reset_with_a_broken_seed_file_keeps_state(tmp_path: Path, clock: Clock) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(BUNDLED_SEED.read_text(encoding="utf-8"), encoding="utf-8")
    with LeatSandbox(seed, clock=clock) as server, httpx.Client(base_url=server.url) as client:
        seed.write_text('{"shops": 1}', encoding="utf-8")
        refused = client.post("/_sandbox/reset")
        assert refused.status_code == 400
        assert "seed.shops: expected a list, got 1" in refused.json()["problems"]
        pat = {"Authorization": f"Bearer {server.personal_access_token}"}
        assert client.get(API + "/shops", headers=pat).status_code == 200


def test_sandbox_stop_is_idempotent_and_url_needs_start() -> None:
    server = LeatSandbox()
    with pytest.raises(RuntimeError):
        _ = server.url
    server.start()
    server.stop()
    server.stop()


# ------------------------------------------------------ issue 8: lists, preview, clock, layout


def test_sandbox_loyalty_transactions_shape_paging_and_validation(
    api: httpx.Client, clock: Clock
) -> None:
    spent = ok(api.post("/reward-receptions", json={"contact_uuid": JANE, "reward_uuid": COFFEE,
                                                    "shop_uuid": SHOP}))
    clock.advance(minutes=1)
    given = ok(api.post("/credit-receptions", json={"contact_uuid": JANE, "shop_uuid": SHOP,
                                                    "credits": 5}))
    page = api.get("/loyalty-transactions", params={"contact_uuid": JANE, "limit": 1})
    assert page.status_code == 200
    body = page.json()
    assert [t["uuid"] for t in body["data"]] == [given["uuid"]]  # newest first by default
    assert body["meta"] == {"page": 1, "limit": 1, "viewing_from": 1, "viewing_to": 1,
                            "last_page": 2, "total": 2}  # as Leat's recorded answer
    item = ok_page(api.get("/loyalty-transactions", params={"contact_uuid": JANE,
                                                            "sort": "created_at"}))[0]
    # The object Create Reward Reception answered; its contact as now (assumption).
    assert {**item, "contact": None} == {**spent, "contact": None}
    assert item["contact"]["credit_balance"]["balance"] == 1250 - 50 + 5
    cut = (clock.now - timedelta(seconds=30)).strftime(ATOM)
    assert [t["uuid"] for t in ok_page(api.get(
        "/loyalty-transactions", params={"created_at[lt]": cut}))] == [spent["uuid"]]
    assert [t["uuid"] for t in ok_page(api.get(
        "/loyalty-transactions", params={"created_at[gte]": cut, "type": "credit_reception"}))
    ] == [given["uuid"]]  # the singular (item) type name is accepted too: assumption
    for bad in ({"limit": 101}, {"type": "orders"}, {"sort": "uuid"},
                {"created_at[gt]": "yesterday"}, {"page": 0}):
        err(api.get("/loyalty-transactions", params=bad), 1003)
    err(api.get("/loyalty-transactions", params={"contact_uuid": UNKNOWN}), 55031)
    err(api.get("/loyalty-transactions", params={"shop_uuid": UNKNOWN}), 1008)


def ok_page(response: httpx.Response) -> list[Any]:
    """`data` of a successful response paginated like List Loyalty Transactions."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data", "meta"}
    data: list[Any] = body["data"]
    return data


def test_sandbox_order_simulate_shape_stores_nothing(sandbox: LeatSandbox, api: httpx.Client
                                                     ) -> None:
    simulated = ok(api.post("/orders/simulate", json=order("sim-1", contact=None)))
    assert simulated == {"type": "points_transaction", "data": {"points": 25}}
    assert sandbox.orders() == []
    ok(api.post("/orders/create-and-process", json=order("sim-1")))
    assert ok(api.post("/orders/simulate", json=order("sim-1")))["data"]["points"] == 25
    err(api.post("/orders/simulate", json=order("sim-2", contact=UNKNOWN)), 55031)


def test_sandbox_reward_claim_limit_seed_field(tmp_path: Path, clock: Clock) -> None:
    seed = json.loads(BUNDLED_SEED.read_text(encoding="utf-8"))
    seed["rewards"][0]["claim_limit"] = "once"
    with pytest.raises(SeedError, match=r"rewards\[0\]\.claim_limit"):
        LeatSandbox(seed)
    seed["rewards"][0]["claim_limit"] = 1
    seed["contacts"][1]["credit_balance"] = 100  # Sam can afford a coffee
    with LeatSandbox(seed, clock=clock) as server, httpx.Client(
        base_url=server.url + API, timeout=5,
        headers={"Authorization": f"Bearer {server.personal_access_token}"},
    ) as client:
        claim = {"contact_uuid": JANE, "reward_uuid": seed["rewards"][0]["uuid"],
                 "shop_uuid": SHOP}
        ok(client.post("/reward-receptions", json=claim))
        err(client.post("/reward-receptions", json=claim), 1019)
        claim["contact_uuid"] = SAM  # per contact: assumption
        ok(client.post("/reward-receptions", json=claim))


def test_sandbox_clock_control_moves_time_forward(sandbox: LeatSandbox, api: httpx.Client,
                                                  root: httpx.Client, clock: Clock) -> None:
    lock = ok(api.post(f"/vouchers/{SPRING}/lock"))
    assert root.get("/_sandbox/clock").json()["now"] == clock.now.isoformat()
    moved = root.post("/_sandbox/clock", json={"advance_s": 3600})
    assert moved.json()["now"] == (clock.now + timedelta(hours=1)).isoformat()
    assert ok(api.get("/vouchers/find", params={"code": "SPRING-2X7Q"}))["status"] == "ACTIVE"
    err(api.post(f"/vouchers/{SPRING}/release",
                 json={"release_key": lock["lock"]["release_key"]}), 1003)
    for bad in ({"advance_s": -1}, {"advance_s": "1"}, {}, []):
        assert root.post("/_sandbox/clock", json=bad).status_code == 400
    with pytest.raises(ValueError, match="advance_s"):
        sandbox.advance_clock(-5)


def test_sandbox_package_has_no_import_circle_and_no_client_import() -> None:
    """The call groups depend on `world` only; nothing of the sandbox imports appliance.leat."""
    package = Path(BUNDLED_SEED).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[path.stem] = {
            node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            and node.module.startswith("appliance")
        }
    assert not any(m.startswith("appliance.leat") for deps in graph.values() for m in deps)
    local = {name: {m.rsplit(".", 1)[1] for m in deps if m.startswith("appliance.sandbox.")}
             for name, deps in graph.items()}
    for part in ("contacts", "rewards", "vouchers", "payments", "orders"):
        assert local[part] <= {"input", "seed", "world"}, part
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in local.get(name, ()):
                visit(dep, (*path, name))
            done.add(name)

    for name in local:
        visit(name, ())
