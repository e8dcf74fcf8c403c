"""The sandbox's giftcard and prepaid transaction lists, and the client calls over them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fakes import SandboxClock as Clock

from appliance.errors import LeatRejected, LeatUnavailable
from appliance.leat.client import LeatClient
from appliance.sandbox.seed import BUNDLED_SEED
from appliance.sandbox.server import LeatSandbox

API = "/api/v3/oauth/clients"
SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"
OTHER_SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-00000000beef"
JANE = "c0a80101-1a2b-4c3d-8e4f-000000000001"
SAM = "c0a80101-1a2b-4c3d-8e4f-000000000002"
GIFTCARD = "9c9c9c9c-0000-4f00-8000-000000000001"
GIFTCARD_HASH = "GC-8H2J4K6L8M"
EMPTY_CARD = "9c9c9c9c-0000-4f00-8000-000000000002"
PROGRAM = "f0f0f0f0-0000-4e00-8000-000000000001"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sandbox(clock: Clock) -> Iterator[LeatSandbox]:
    seed: dict[str, Any] = json.loads(BUNDLED_SEED.read_text())
    seed["shops"].append({"id": 2, "uuid": OTHER_SHOP, "name": "Demo Kiosk",
                          "type": "physical", "reference": "DEMO-02"})
    with LeatSandbox(seed, clock=clock) as server:
        yield server


@pytest.fixture
def api(sandbox: LeatSandbox) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sandbox.personal_access_token}"}
    with httpx.Client(base_url=sandbox.url + API, headers=headers, timeout=5) as client:
        yield client


@pytest.fixture
def leat(sandbox: LeatSandbox) -> Iterator[LeatClient]:
    with LeatClient(sandbox.url, token=sandbox.personal_access_token, shop_uuid=SHOP,
                    timeout_s=5.0) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def err(response: httpx.Response, code: int) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code, response.text


def gift(api: httpx.Client, amount: int, card: str = GIFTCARD, shop: str = SHOP) -> Any:
    return ok(api.post("/giftcard-transactions", json={
        "giftcard_uuid": card, "amount_in_cents": amount, "shop_uuid": shop}))["data"]


def prepaid(api: httpx.Client, amount: int, contact: str = JANE, shop: str = SHOP) -> Any:
    return ok(api.post("/prepaid-transactions", json={
        "contact_uuid": contact, "amount_in_cents": amount, "shop_uuid": shop}))["data"]


# ------------------------------------------------------------------ giftcard transactions


def test_sandbox_lists_giftcard_transactions_with_filters_sort_and_slim_meta(
    api: httpx.Client, clock: Clock
) -> None:
    first = gift(api, -100)
    clock.advance(minutes=1)
    second = gift(api, -200, shop=OTHER_SHOP)
    clock.advance(minutes=1)
    third = gift(api, 1000, card=EMPTY_CARD)
    body = ok(api.get("/giftcard-transactions"))
    assert [t["uuid"] for t in body["data"]] == [first["uuid"], second["uuid"], third["uuid"]]
    assert body["meta"] == {"page": 1, "limit": 10, "viewing_from": 1, "viewing_to": 3,
                            "last_page": 1, "total": 3}
    item = body["data"][0]
    assert set(item) >= {"id", "uuid", "amount_in_cents", "type", "settled", "card", "shop",
                         "settlements", "created_at"}
    assert (item["card"]["uuid"], item["shop"]["uuid"]) == (GIFTCARD, SHOP)

    def uuids(**params: Any) -> list[str]:
        return [t["uuid"] for t in ok(api.get("/giftcard-transactions", params=params))["data"]]

    assert uuids(giftcard_hash=GIFTCARD_HASH) == [first["uuid"], second["uuid"]]
    assert uuids(giftcard_hash=GIFTCARD_HASH, sort="-created_at") == [second["uuid"],
                                                                      first["uuid"]]
    assert uuids(shop_uuid=OTHER_SHOP) == [second["uuid"]]
    assert uuids(giftcard_program_uuid=PROGRAM) == [first["uuid"], second["uuid"], third["uuid"]]
    assert uuids(giftcard_program_uuid=UNKNOWN) == []
    assert uuids(giftcard_hash="GC-NOPE") == []
    start = datetime(2026, 11, 22, 9, 1, tzinfo=UTC).isoformat()
    assert uuids(**{"created_at[gte]": start}) == [second["uuid"], third["uuid"]]
    assert uuids(**{"created_at[gt]": start}) == [third["uuid"]]
    assert uuids(**{"created_at[lte]": start}) == [first["uuid"], second["uuid"]]
    assert uuids(**{"created_at[lt]": start, "sort": "-created_at"}) == [first["uuid"]]
    page2 = ok(api.get("/giftcard-transactions", params={"perPage": 2, "page": 2}))
    assert [t["uuid"] for t in page2["data"]] == [third["uuid"]]
    assert page2["meta"] == {"page": 2, "limit": 2, "viewing_from": 3, "viewing_to": 3,
                             "last_page": 2, "total": 3}
    err(api.get("/giftcard-transactions", params={"perPage": 101}), 1003)
    err(api.get("/giftcard-transactions", params={"perPage": 0}), 1003)
    err(api.get("/giftcard-transactions", params={"sort": "amount"}), 1003)
    err(api.get("/giftcard-transactions", params={"created_at[gte]": "yesterday"}), 1003)


def test_client_lists_and_gets_giftcard_transactions(leat: LeatClient, clock: Clock) -> None:
    paid = leat.create_giftcard_transaction(giftcard_uuid=GIFTCARD, amount_in_cents=-250)
    clock.advance(seconds=30)
    loaded = leat.create_giftcard_transaction(giftcard_uuid=GIFTCARD, amount_in_cents=100)
    assert leat.get_giftcard_transaction(paid.uuid) == paid
    found = leat.list_giftcard_transactions(giftcard_hash=GIFTCARD_HASH, shop_uuid=SHOP)
    assert [(t.uuid, t.amount_in_cents) for t in found] == [(loaded.uuid, 100),
                                                            (paid.uuid, -250)]
    assert found[1].giftcard_uuid == GIFTCARD and found[1].created_at == paid.created_at
    assert found[1].id is not None and not found[1].settled
    later = leat.list_giftcard_transactions(giftcard_hash=GIFTCARD_HASH,
                                            created_after=clock.now - timedelta(seconds=1))
    assert [t.uuid for t in later] == [loaded.uuid]
    oldest_first = leat.list_giftcard_transactions(newest_first=False, per_page=1)
    assert [t.uuid for t in oldest_first] == [paid.uuid]
    assert leat.list_giftcard_transactions(giftcard_hash=GIFTCARD_HASH,
                                           shop_uuid=OTHER_SHOP) == []
    with pytest.raises(LeatRejected) as missing:
        leat.get_giftcard_transaction(UNKNOWN)
    assert missing.value.code == 5010
    with pytest.raises(ValueError, match="per_page"):
        leat.list_giftcard_transactions(per_page=101)


def test_client_giftcard_list_faults_are_unavailable(sandbox: LeatSandbox,
                                                     leat: LeatClient) -> None:
    sandbox.faults.set(status=502, only_paths=("/giftcard-transactions",), times=1)
    with pytest.raises(LeatUnavailable):
        leat.list_giftcard_transactions(giftcard_hash=GIFTCARD_HASH)
    assert leat.list_giftcard_transactions(giftcard_hash=GIFTCARD_HASH) == []


# ------------------------------------------------------------------- prepaid transactions


def test_sandbox_lists_prepaid_transactions_newest_first_with_balances(
    api: httpx.Client, clock: Clock
) -> None:
    first = prepaid(api, -500)
    clock.advance(minutes=1)
    second = prepaid(api, 300, shop=OTHER_SHOP)
    third = prepaid(api, -100)  # the same second: still listed before `second`
    sams = prepaid(api, 700, contact=SAM)
    body = ok(api.get("/prepaid-transactions", params={"contact_uuid": JANE}))
    assert [t["uuid"] for t in body["data"]] == [third["uuid"], second["uuid"], first["uuid"]]
    assert [t["prepaid_balance"]["balance_in_cents"] for t in body["data"]] == [1700, 1800, 1500]
    assert body["data"][0]["contact"] == {"uuid": JANE, "email": "jane.doe@example.com"}
    assert body["meta"]["total"] == 3 and body["meta"]["per_page"] == 10

    def uuids(**params: Any) -> list[str]:
        return [t["uuid"] for t in ok(api.get("/prepaid-transactions", params=params))["data"]]

    assert uuids(shop_uuid=OTHER_SHOP) == [second["uuid"]]
    assert uuids(contact_uuid=SAM) == [sams["uuid"]]
    assert uuids() == [sams["uuid"], third["uuid"], second["uuid"], first["uuid"]]
    assert uuids(contact_uuid=JANE, limit=2, page=2) == [first["uuid"]]
    err(api.get("/prepaid-transactions", params={"limit": 31}), 1003)
    err(api.get("/prepaid-transactions", params={"contact_uuid": UNKNOWN}), 55031)
    err(api.get("/prepaid-transactions", params={"shop_uuid": UNKNOWN}), 1008)


def test_client_lists_prepaid_transactions(sandbox: LeatSandbox, leat: LeatClient,
                                           clock: Clock) -> None:
    paid = leat.create_prepaid_transaction(amount_in_cents=-400, contact_uuid=JANE)
    clock.advance(seconds=5)
    topped = leat.create_prepaid_transaction(amount_in_cents=250,
                                             contact_identifier_value="LC-7F3K9Q2M")
    found = leat.list_prepaid_transactions(contact_uuid=JANE)
    assert [(t.uuid, t.amount_in_cents, t.balance_after_cents) for t in found] == [
        (topped.uuid, 250, 1850), (paid.uuid, -400, 1600)]
    assert {(t.contact_uuid, t.shop_uuid) for t in found} == {(JANE, SHOP)}
    assert leat.list_prepaid_transactions(contact_uuid=SAM) == []
    assert [t.uuid for t in leat.list_prepaid_transactions(contact_uuid=JANE, limit=1,
                                                           page=2)] == [paid.uuid]
    with pytest.raises(ValueError, match="limit"):
        leat.list_prepaid_transactions(limit=31)
    sandbox.faults.set(maintenance=True, only_paths=("/prepaid-transactions",), times=1)
    with pytest.raises(LeatUnavailable):
        leat.list_prepaid_transactions(contact_uuid=JANE)
