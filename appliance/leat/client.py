"""`LeatClient`: one method per call the appliance makes to the Leat REST API
(`/api/v3/oauth/clients/...`), each returning a frozen, validated result (models.py,
payments.py).

The requests themselves, their authentication (a personal access token or OAuth client
credentials) and how every answer maps onto the exception tree are http.py's. Thread-safe.
Tokens, secrets and e-mail addresses are never logged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import quote

from appliance.config import LeatConfig, read_secret
from appliance.errors import ConfigError, LeatRejected
from appliance.leat.fields import Fields, parse_list
from appliance.leat.http import LeatHttp
from appliance.leat.models import (
    CollectableReward,
    CollectResult,
    Contact,
    ContactIdentifier,
    CreditReception,
    LoyaltyProgram,
    LoyaltyTransaction,
    Order,
    OrderResult,
    PointsResult,
    ReturnResult,
    Reward,
    RewardReception,
    Shop,
    Tier,
)
from appliance.leat.payments import (
    Giftcard,
    GiftcardTransaction,
    ListedGiftcardTransaction,
    PrepaidTransaction,
    Voucher,
    VoucherLock,
    VoucherRedemption,
    VoucherReversal,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://api.leat.com"
VOUCHER_NOT_FOUND: Final = 80004
MAX_TRANSACTIONS_PAGE: Final = 100  # Leat's largest `limit` for loyalty transactions
MAX_GIFTCARD_TXS_PAGE: Final = 100  # List Giftcard Transactions: largest `perPage` (LD)
MAX_PREPAID_TXS_PAGE: Final = 30  # List Prepaid Transactions: largest `limit` (LD)
# An `orders/find` answer that means "no such order" (none is documented for orders:
# docs/leat-assumptions.md): Leat's generic 60013 "Model not found.", or Leat's error
# envelope (a code) whose message says an order was not found.
MODEL_NOT_FOUND: Final = 60013
_ORDER_NOT_FOUND = re.compile(r"\border\b[^|]{0,40}?\bnot\s+found\b", re.IGNORECASE)


class LeatClient:
    """One method per Leat call the appliance makes; results are frozen dataclasses."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        shop_uuid: str | None = None,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token and not (client_id and client_secret):
            raise ConfigError(
                ["leat: a personal access token or OAuth client_id + client secret is needed"]
            )
        self.shop_uuid = shop_uuid
        self._http = LeatHttp(base_url, token=token, client_id=client_id,
                              client_secret=client_secret, timeout_s=timeout_s,
                              transport=transport, clock=clock)

    @classmethod
    def from_config(
        cls, cfg: LeatConfig, *, transport: httpx.BaseTransport | None = None
    ) -> LeatClient:
        """A client for the configured account; `ConfigError` when no credentials are set."""
        token = read_secret("leat-token", cfg.token_file)
        secret = None
        if token is None and cfg.client_id:
            secret = read_secret("leat-client-secret", cfg.client_secret_file)
        if token is None and not (cfg.client_id and secret):
            raise ConfigError(
                [
                    "leat: set token_file (or credential leat-token), or client_id with "
                    "client_secret_file (or credential leat-client-secret)"
                ]
            )
        return cls(
            cfg.base_url,
            token=token,
            client_id=cfg.client_id,
            client_secret=secret,
            shop_uuid=cfg.shop_uuid,
            timeout_s=cfg.timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- contact identifiers

    def find_contact_identifier(self, value: str) -> ContactIdentifier:
        """The loyalty card with this scanned value (60003 unknown, 60004 inactive)."""
        data = self._get("/contact-identifiers/find", {"contact_identifier_value": value})
        return ContactIdentifier.parse(Fields(data))

    # ---------------------------------------------------------------------------- contacts

    def get_contact(self, uuid: str) -> Contact:
        """The contact with balances and tier (55031 not found)."""
        return Contact.parse(Fields(self._get(f"/contacts/{_seg(uuid)}")))

    def find_contact_by_email(self, email: str) -> Contact:
        """The contact with this e-mail address (55031 not found)."""
        return Contact.parse(Fields(self._get("/contacts/find-one-by", {"email": email})))

    def find_or_create_contact(self, email: str) -> Contact:
        """The contact with this e-mail address, created when missing."""
        return Contact.parse(Fields(self._get("/contacts/find-or-create", {"email": email})))

    def get_credit_balance(self, contact_uuid: str) -> int:
        """The contact's points balance."""
        data = self._get(f"/contacts/{_seg(contact_uuid)}/credit-balance")
        return Fields(data).req_int("balance")

    def get_prepaid_balance(self, contact_uuid: str) -> int:
        """The contact's prepaid balance in cents."""
        data = self._get(f"/contacts/{_seg(contact_uuid)}/prepaid-balance")
        return Fields(data).req_int("balance_in_cents")

    def get_tier(self, contact_uuid: str) -> Tier | None:
        """The contact's tier, or None when the contact has none (a nameless tier object)."""
        data = self._get(f"/contacts/{_seg(contact_uuid)}/tier")
        if data is None or data in ({}, []):
            return None
        return Tier.parse_optional(Fields(data))

    # ----------------------------------------------------------------------------- rewards

    def list_rewards(
        self, *, contact_uuid: str | None = None, shop_uuid: str | None = None
    ) -> list[Reward]:
        """Rewards (for the client's shop unless given), cheapest first, then by title."""
        params = {"contact_uuid": contact_uuid, "shop_uuid": shop_uuid or self.shop_uuid}
        rewards = [Reward.parse(item) for item in parse_list(self._get("/rewards", params))]
        return sorted(rewards, key=lambda r: (r.required_credits, r.title.casefold(), r.uuid))

    def create_reward_reception(
        self,
        *,
        contact_uuid: str,
        reward_uuid: str,
        shop_uuid: str | None = None,
        contact_identifier_value: str | None = None,
    ) -> RewardReception:
        """Spend points on a reward (1017 too few points, 1018 no stock, 1019 claim limit)."""
        body = {
            "contact_uuid": contact_uuid,
            "reward_uuid": reward_uuid,
            "shop_uuid": self._shop(shop_uuid, "create_reward_reception"),
            "contact_identifier_value": contact_identifier_value,
        }
        return RewardReception.parse(Fields(self._post("/reward-receptions", body)))

    def reverse_reward_reception(self, uuid: str) -> CreditReception:
        """Give the points of a reward reception back."""
        data = self._post(f"/reward-receptions/{_seg(uuid)}/reverse")
        return CreditReception.parse(Fields(data))

    def list_loyalty_transactions(
        self,
        *,
        contact_uuid: str | None = None,
        shop_uuid: str | None = None,
        kind: str | None = None,
        created_after: datetime | None = None,
        newest_first: bool = True,
        limit: int = 100,
        page: int = 1,
    ) -> list[LoyaltyTransaction]:
        """One page of loyalty transactions (reward and credit receptions), filtered.

        Filters from PD `loyalty-transactions` and the official PHP SDK
        (`LoyaltyTransactionsResource::list`: `contact_uuid`, `shop_uuid`, `type` (our
        `kind`) = `credit_receptions` | `reward_receptions`, `limit` <= 100, `page`); `sort` and
        `created_at[gte]` are in LD only (docs/leat-assumptions.md). `shop_uuid` is not
        defaulted to the configured shop: None lists every shop.
        """
        if kind not in (None, "credit_receptions", "reward_receptions"):
            raise ValueError("kind must be credit_receptions or reward_receptions")
        if not 1 <= limit <= MAX_TRANSACTIONS_PAGE or page < 1:
            raise ValueError(f"limit must be 1..{MAX_TRANSACTIONS_PAGE} and page at least 1")
        params: dict[str, object | None] = {
            "contact_uuid": contact_uuid, "shop_uuid": shop_uuid, "type": kind,
            "limit": limit, "page": page,
            "sort": "-created_at" if newest_first else "created_at",
            "created_at[gte]": (None if created_after is None
                                else created_after.astimezone(UTC).isoformat()),
        }
        data = self._get("/loyalty-transactions", params)
        items = [LoyaltyTransaction.parse(item) for item in parse_list(data)]
        # The filters again, on what the items carry: `sort` and `created_at[gte]` are in
        # LD only, and an item outside what was asked must never reconcile a call.
        return [
            t for t in items
            if (contact_uuid is None or t.contact_uuid in (None, contact_uuid))
            and (kind is None or t.type.endswith(kind.removesuffix("s")))
            and (created_after is None or t.created_at is None or t.created_at >= created_after)
        ]

    # ---------------------------------------------------------------- collectable rewards

    def list_collectable_rewards(self, contact_uuid: str) -> list[CollectableReward]:
        """The contact's pre-redeemed rewards (collected ones included, as Leat lists them)."""
        data = self._get("/collectable-rewards", {"contact_uuid": contact_uuid})
        return [CollectableReward.parse(item) for item in parse_list(data)]

    def collect_reward(self, uuid: str) -> CollectResult:
        """Collect a collectable reward by its loyalty transaction uuid (80300 gone/expired)."""
        data = self._http.request("PUT", f"/collectable-rewards/collect/{_seg(uuid)}")
        return CollectResult.parse(Fields(data))

    def reverse_collected_reward(self, uuid: str) -> CollectResult:
        """Undo a collection by its collectable-reward-redemption uuid."""
        data = self._post(f"/collectable-rewards/{_seg(uuid)}/reverse")
        return CollectResult.parse(Fields(data))

    # ---------------------------------------------------------------------------- vouchers

    def find_voucher(self, code: str) -> Voucher:
        """The voucher with this code (80004 not found)."""
        return Voucher.parse(Fields(self._get("/vouchers/find", {"code": code})))

    def list_vouchers(
        self, *, contact_uuid: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Voucher]:
        """The first page of vouchers (a contact's, in a status); Leat allows `limit` <= 500."""
        params = {"contact_uuid": contact_uuid, "status": status, "limit": limit, "page": 1}
        return [Voucher.parse(item) for item in parse_list(self._get("/vouchers", params))]

    def validate_voucher(
        self, uuid: str, *, shop_uuid: str | None = None, contact_uuid: str | None = None
    ) -> Voucher | None:
        """Check a voucher can be used here; an unusable one raises `LeatRejected`.

        The response is undocumented: the voucher is returned when Leat includes it.
        """
        body = {
            "shop_uuid": self._shop(shop_uuid, "validate_voucher"),
            "contact_uuid": contact_uuid,
        }
        data = self._post(f"/vouchers/{_seg(uuid)}/validate", body)
        if isinstance(data, dict):
            fields = Fields(data)
            if fields.has("code") and fields.has("uuid"):
                return Voucher.parse(fields)
            if isinstance(data.get("voucher"), dict) and fields.req_obj("voucher").has("code"):
                return Voucher.parse(fields.req_obj("voucher"))
        return None

    def lock_voucher(self, uuid: str) -> VoucherLock:
        """Reserve a voucher for one hour (80017 already locked, 80005 redeemed, 80006 expired)."""
        return VoucherLock.parse(Fields(self._post(f"/vouchers/{_seg(uuid)}/lock")))

    def release_voucher(self, uuid: str, release_key: str) -> VoucherLock:
        """Release a lock taken with `lock_voucher`."""
        data = self._post(f"/vouchers/{_seg(uuid)}/release", {"release_key": release_key})
        return VoucherLock.parse(Fields(data))

    def redeem_voucher(
        self,
        *,
        code: str,
        shop_uuid: str | None = None,
        contact_uuid: str | None = None,
        release_key: str | None = None,
    ) -> VoucherRedemption:
        """Redeem a voucher by code (80005 already redeemed, 80006 expired, 80004 unknown)."""
        body = {
            "code": code,
            "shop_uuid": self._shop(shop_uuid, "redeem_voucher"),
            "contact_uuid": contact_uuid,
            "release_key": release_key,
        }
        return VoucherRedemption.parse(Fields(self._post("/vouchers/redeem", body)))

    def reverse_voucher_redemption(
        self, *, redemption_uuid: str | None = None, voucher_uuid: str | None = None
    ) -> VoucherReversal:
        """Undo a redemption: by redemption uuid (Leat 2026), else or on 80004 by voucher uuid."""
        candidates = [u for u in (redemption_uuid, voucher_uuid) if u]
        if not candidates:
            raise ValueError("reverse_voucher_redemption needs redemption_uuid or voucher_uuid")
        for uuid in candidates[:-1]:
            try:
                return self._reverse_voucher(uuid)
            except LeatRejected as exc:
                if exc.code != VOUCHER_NOT_FOUND:
                    raise
                log.info("Leat did not know redemption %s; reversing by voucher uuid", uuid)
        return self._reverse_voucher(candidates[-1])

    def _reverse_voucher(self, uuid: str) -> VoucherReversal:
        data = self._post(f"/vouchers/{_seg(uuid)}/reverse")
        voucher = None
        if isinstance(data, dict):
            fields = Fields(data)
            if fields.has("code") and fields.has("status"):
                voucher = Voucher.parse(fields)
            elif isinstance(data.get("voucher"), dict):
                voucher = Voucher.parse(fields.req_obj("voucher"))
        return VoucherReversal(reversed_uuid=uuid, voucher=voucher)

    # --------------------------------------------------------------------------- giftcards

    def find_giftcard(self, hash: str) -> Giftcard:
        """The giftcard with this scanned hash (5001 not found)."""
        return Giftcard.parse(Fields(self._get("/giftcards/find-one-by", {"hash": hash})))

    def get_giftcard(self, uuid: str) -> Giftcard:
        """The giftcard with this uuid, with its current balance."""
        return Giftcard.parse(Fields(self._get(f"/giftcards/{_seg(uuid)}")))

    def create_giftcard_transaction(
        self, *, giftcard_uuid: str, amount_in_cents: int, shop_uuid: str | None = None
    ) -> GiftcardTransaction:
        """Pay with (negative) or load (positive) a giftcard (5003 balance too low, 5002)."""
        body = {
            "giftcard_uuid": giftcard_uuid,
            "amount_in_cents": amount_in_cents,
            "shop_uuid": self._shop(shop_uuid, "create_giftcard_transaction"),
        }
        return GiftcardTransaction.parse(Fields(self._post("/giftcard-transactions", body)))

    def get_giftcard_transaction(self, uuid: str) -> GiftcardTransaction:
        """One giftcard transaction (5010 not found)."""
        return GiftcardTransaction.parse(Fields(self._get(f"/giftcard-transactions/{_seg(uuid)}")))

    def list_giftcard_transactions(
        self,
        *,
        giftcard_hash: str | None = None,
        giftcard_program_uuid: str | None = None,
        shop_uuid: str | None = None,
        created_after: datetime | None = None,
        newest_first: bool = True,
        per_page: int = MAX_GIFTCARD_TXS_PAGE,
        page: int = 1,
    ) -> list[ListedGiftcardTransaction]:
        """One page of giftcard transactions, filtered (LD "List Giftcard Transactions").

        Leat's parameters: `perPage` (<= 100), `page`, `giftcard_hash`,
        `giftcard_program_uuid`, `shop_uuid`, `sort=-created_at` and `created_at[gte]`
        (our `created_after`). `shop_uuid` is not defaulted: None lists every shop. The
        shop and time filters are applied again on what the items carry, so an item outside
        what was asked never reconciles a call.
        """
        if not 1 <= per_page <= MAX_GIFTCARD_TXS_PAGE or page < 1:
            raise ValueError(f"per_page must be 1..{MAX_GIFTCARD_TXS_PAGE} and page at least 1")
        params: dict[str, object | None] = {
            "giftcard_hash": giftcard_hash, "giftcard_program_uuid": giftcard_program_uuid,
            "shop_uuid": shop_uuid, "perPage": per_page, "page": page,
            "sort": "-created_at" if newest_first else "created_at",
            "created_at[gte]": (None if created_after is None
                                else created_after.astimezone(UTC).isoformat()),
        }
        data = self._get("/giftcard-transactions", params)
        items = [ListedGiftcardTransaction.parse(item) for item in parse_list(data)]
        return [
            t for t in items
            if (shop_uuid is None or t.shop_uuid in (None, shop_uuid))
            and (created_after is None or t.created_at is None or t.created_at >= created_after)
        ]

    def reverse_giftcard_transaction(self, uuid: str) -> GiftcardTransaction:
        """Undo a giftcard transaction (55025: only the card's last one can be)."""
        data = self._post(f"/giftcard-transactions/{_seg(uuid)}/reverse")
        return GiftcardTransaction.parse(Fields(data))

    # ----------------------------------------------------------------------------- prepaid

    def create_prepaid_transaction(
        self,
        *,
        amount_in_cents: int,
        contact_uuid: str | None = None,
        contact_identifier_value: str | None = None,
        shop_uuid: str | None = None,
    ) -> PrepaidTransaction:
        """Pay with (negative) or top up (positive) a contact's prepaid balance."""
        if not (contact_uuid or contact_identifier_value):
            raise ValueError("a prepaid transaction needs contact_uuid or contact_identifier_value")
        body = {
            "amount_in_cents": amount_in_cents,
            "contact_uuid": contact_uuid,
            "contact_identifier_value": contact_identifier_value,
            "shop_uuid": self._shop(shop_uuid, "create_prepaid_transaction"),
        }
        return PrepaidTransaction.parse(Fields(self._post("/prepaid-transactions", body)))

    def list_prepaid_transactions(
        self,
        *,
        contact_uuid: str | None = None,
        shop_uuid: str | None = None,
        limit: int = MAX_PREPAID_TXS_PAGE,
        page: int = 1,
    ) -> list[PrepaidTransaction]:
        """One page of prepaid transactions (LD "List Prepaid Transactions").

        Leat's parameters: `contact_uuid`, `shop_uuid`, `limit` (<= 30), `page`; there is no
        time filter and no sort (ASSUMPTION: newest first, docs/leat-assumptions.md). Each
        item carries the contact's balance after it. `shop_uuid` is not defaulted.
        """
        if not 1 <= limit <= MAX_PREPAID_TXS_PAGE or page < 1:
            raise ValueError(f"limit must be 1..{MAX_PREPAID_TXS_PAGE} and page at least 1")
        params = {"contact_uuid": contact_uuid, "shop_uuid": shop_uuid, "limit": limit,
                  "page": page}
        items = [PrepaidTransaction.parse(item)
                 for item in parse_list(self._get("/prepaid-transactions", params))]
        return [t for t in items
                if (contact_uuid is None or t.contact_uuid in (None, contact_uuid))
                and (shop_uuid is None or t.shop_uuid in (None, shop_uuid))]

    def reverse_prepaid_transaction(self, uuid: str) -> PrepaidTransaction:
        """Undo a prepaid transaction."""
        data = self._post(f"/prepaid-transactions/{_seg(uuid)}/reverse")
        return PrepaidTransaction.parse(Fields(data))

    # ------------------------------------------------------------------------------ orders

    def create_and_process_order(self, body: Mapping[str, Any]) -> OrderResult:
        """Create an order and award its points; keep `external_identifier` stable on retry."""
        data = self._post("/orders/create-and-process", dict(body))
        return OrderResult.parse_created(Fields(data), str(body.get("external_identifier")))

    def simulate_order(self, body: Mapping[str, Any]) -> int | None:
        """The points an order body would earn, nothing stored (`POST /orders/simulate`).

        LD answers `{"type": "points_transaction", "data": {"points"}}`; the official PHP
        SDK's test mocks `{"result": {...}}`: both are read. None when Leat's order action
        is not a points transaction.
        """
        fields = Fields(self._post("/orders/simulate", dict(body)))
        return PointsResult.parse(fields.opt_obj("result") or fields).points

    def create_order(self, body: Mapping[str, Any]) -> Order:
        """Create an order without processing it."""
        data = self._post("/orders", dict(body))
        fields = Fields(data)
        return Order.parse(fields.req_obj("order") if fields.has("order") else fields)

    def find_order(self, external_identifier: str) -> Order | None:
        """The order with our `external_identifier`, or None when Leat does not have it.

        No "order not found" answer is documented (docs/leat-assumptions.md), so None is
        returned only for `data: null`, Leat's generic code 60013 ("Model not found."), and
        a Leat error body (a non-zero `code`) whose message says an order was not found, as
        the sandbox answers (code 9404, "Order not found."). Anything else is raised as
        `LeatRejected`, including a bare HTTP 404
        without a Leat code and any other message: a wrong base URL or route, or an answer
        we do not understand, must never read as "not delivered", or an order could be
        posted twice or given up.
        """
        try:
            data = self._get("/orders/find", {"external_identifier": external_identifier})
        except LeatRejected as exc:
            if exc.code == MODEL_NOT_FOUND or (
                exc.code != 0 and _ORDER_NOT_FOUND.search(exc.leat_message)
            ):
                return None
            raise
        if data is None or data in ({}, []):
            return None
        fields = Fields(data)
        return Order.parse(fields.req_obj("order") if fields.has("order") else fields)

    def get_order(self, uuid: str) -> Order:
        """The order with this Leat uuid."""
        fields = Fields(self._get(f"/orders/{_seg(uuid)}"))
        return Order.parse(fields.req_obj("order") if fields.has("order") else fields)

    def process_order(self, uuid: str) -> OrderResult:
        """Run the order action (award points) for a created order; `order` is None."""
        return OrderResult.parse(Fields(self._post(f"/orders/{_seg(uuid)}/process")))

    def create_and_process_order_return(self, body: Mapping[str, Any]) -> ReturnResult:
        """Return (part of) an order; corrects points only (reverse other actions yourself)."""
        data = self._post("/order-returns/create-and-process", dict(body))
        return ReturnResult.parse(Fields(data))

    # ------------------------------------------------------------------- credit receptions

    def create_credit_reception(
        self,
        *,
        contact_uuid: str,
        unit_value: float | None = None,
        credits: int | None = None,
        unit_name: str | None = None,
        shop_uuid: str | None = None,
    ) -> CreditReception:
        """Give points for a purchase amount (`unit_value`, major units) or as `credits`."""
        if unit_value is None and credits is None:
            raise ValueError("a credit reception needs unit_value or credits")
        body = {
            "contact_uuid": contact_uuid,
            "unit_value": unit_value,
            "credits": credits,
            "unit_name": unit_name,
            "shop_uuid": self._shop(shop_uuid, "create_credit_reception"),
        }
        return CreditReception.parse(Fields(self._post("/credit-receptions", body)))

    def reverse_credit_reception(self, uuid: str) -> CreditReception:
        """Take the points of a credit reception back (a new, negated reception)."""
        data = self._post(f"/credit-receptions/{_seg(uuid)}/reverse")
        return CreditReception.parse(Fields(data))

    def calculate_credits(
        self,
        *,
        unit_value: float,
        shop_uuid: str | None = None,
        contact_uuid: str | None = None,
        unit_name: str | None = None,
    ) -> int:
        """How many points `unit_value` would earn (a dry run)."""
        params = {
            "unit_value": unit_value,
            "shop_uuid": self._shop(shop_uuid, "calculate_credits"),
            "contact_uuid": contact_uuid,
            "unit_name": unit_name,
        }
        return Fields(self._get("/credit-receptions/calculate", params)).req_int("credits")

    # ------------------------------------------------------------------------ shops, program

    def list_shops(self) -> list[Shop]:
        """The account's shops."""
        return [Shop.parse(item) for item in parse_list(self._get("/shops"))]

    def get_shop(self, uuid: str) -> Shop:
        """One shop (1008 not found)."""
        return Shop.parse(Fields(self._get(f"/shops/{_seg(uuid)}")))

    def get_loyalty_program(self) -> LoyaltyProgram:
        """The account's loyalty program (its name for points: `custom_credit_name`)."""
        return LoyaltyProgram.parse(Fields(self._get("/loyalty-program")))

    # ------------------------------------------------------------------------------- HTTP

    def _shop(self, shop_uuid: str | None, call: str) -> str:
        shop = shop_uuid or self.shop_uuid
        if not shop:
            raise ConfigError([f"leat.shop_uuid: needed for {call}"])
        return shop

    def _get(self, path: str, params: Mapping[str, object] | None = None) -> object:
        return self._http.request("GET", path, params=params)

    def _post(self, path: str, body: Mapping[str, object] | None = None) -> object:
        return self._http.request("POST", path, body=body)



def _seg(value: str) -> str:
    """`value` quoted as one path segment (a scanned or stored id must not add a path)."""
    if not value:
        raise ValueError("an empty id cannot be part of a Leat path")
    return quote(value, safe="")
