"""The Leat sandbox's state: one `World` and the call groups over it, and the route table.

The groups (contacts, rewards, vouchers, payments, orders) each depend only on `World`
(the shared data), never on this module or on each other, so the import graph has no circle.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from appliance.sandbox.contacts import Contacts
from appliance.sandbox.input import Input
from appliance.sandbox.orders import Orders
from appliance.sandbox.payments import Payments
from appliance.sandbox.rewards import Rewards
from appliance.sandbox.seed import Seed
from appliance.sandbox.vouchers import Vouchers
from appliance.sandbox.world import Args, World


class State:
    """All sandbox data of one seed (`world`) and the Leat calls that read and change it."""

    def __init__(self, seed: Seed, clock: Callable[[], datetime]) -> None:
        self.world = World(seed, clock)
        self.lock = self.world.lock
        self.contacts = Contacts(self.world)
        self.rewards = Rewards(self.world)
        self.vouchers = Vouchers(self.world)
        self.payments = Payments(self.world)
        self.orders = Orders(self.world)


# (method, path pattern relative to /api/v3/oauth/clients, "<part>.<method>" of `State`);
# "{}" is one path segment. More specific patterns come first.
ROUTES: Final[tuple[tuple[str, str, str], ...]] = (
    ("GET", "", "contacts.health"),
    ("GET", "/shops", "contacts.list_shops"),
    ("GET", "/shops/{}", "contacts.get_shop"),
    ("GET", "/loyalty-program", "contacts.loyalty_program"),
    ("GET", "/units", "contacts.units"),
    ("GET", "/contact-identifiers/find", "contacts.find_identifier"),
    ("GET", "/contacts/find-one-by", "contacts.find_contact"),
    ("GET", "/contacts/find-or-create", "contacts.find_or_create_contact"),
    ("GET", "/contacts/{}", "contacts.get_contact"),
    ("GET", "/contacts/{}/credit-balance", "contacts.credit_balance"),
    ("GET", "/contacts/{}/prepaid-balance", "contacts.prepaid_balance"),
    ("GET", "/contacts/{}/tier", "contacts.tier"),
    ("GET", "/rewards", "rewards.list_rewards"),
    ("GET", "/rewards/{}", "rewards.get_reward"),
    ("POST", "/reward-receptions", "rewards.create_reward_reception"),
    ("POST", "/reward-receptions/{}/reverse", "rewards.reverse_reward_reception"),
    ("GET", "/collectable-rewards", "rewards.list_collectables"),
    ("PUT", "/collectable-rewards/collect/{}", "rewards.collect"),
    ("POST", "/collectable-rewards/{}/reverse", "rewards.reverse_collect"),
    ("GET", "/vouchers", "vouchers.list_vouchers"),
    ("GET", "/vouchers/find", "vouchers.find_voucher"),
    ("POST", "/vouchers/redeem", "vouchers.redeem_voucher"),
    ("POST", "/vouchers/{}/validate", "vouchers.validate_voucher"),
    ("POST", "/vouchers/{}/lock", "vouchers.lock_voucher"),
    ("POST", "/vouchers/{}/release", "vouchers.release_voucher"),
    ("POST", "/vouchers/{}/reverse", "vouchers.reverse_voucher"),
    ("GET", "/giftcards/find-one-by", "payments.find_giftcard"),
    ("GET", "/giftcards/{}", "payments.get_giftcard"),
    ("GET", "/giftcard-transactions", "payments.list_giftcard_txs"),
    ("POST", "/giftcard-transactions", "payments.create_giftcard_tx"),
    ("GET", "/giftcard-transactions/{}", "payments.get_giftcard_tx"),
    ("POST", "/giftcard-transactions/{}/reverse", "payments.reverse_giftcard_tx"),
    ("GET", "/prepaid-transactions", "payments.list_prepaid_txs"),
    ("POST", "/prepaid-transactions", "payments.create_prepaid_tx"),
    ("POST", "/prepaid-transactions/{}/reverse", "payments.reverse_prepaid_tx"),
    ("POST", "/credit-receptions", "rewards.create_credit_reception"),
    ("GET", "/credit-receptions/calculate", "rewards.calculate_credits"),
    ("POST", "/credit-receptions/{}/reverse", "rewards.reverse_credit_reception"),
    ("GET", "/loyalty-transactions", "rewards.list_transactions"),
    ("POST", "/orders/create-and-process", "orders.create_and_process"),
    ("POST", "/orders/simulate", "orders.simulate"),
    ("GET", "/orders/find", "orders.find"),
    ("GET", "/orders", "orders.list_orders"),
    ("POST", "/orders", "orders.create"),
    ("GET", "/orders/{}", "orders.get"),
    ("POST", "/orders/{}/process", "orders.process"),
    ("POST", "/order-returns/create-and-process", "orders.create_return"),
)

Handler = Callable[[Args, Input, Input], Any]


def handler(state: State, name: str) -> Handler:
    """The bound handler named in `ROUTES` (`<part>.<method>`)."""
    owner: Any = state
    for part in name.split("."):
        owner = getattr(owner, part)
    result: Handler = owner
    return result
