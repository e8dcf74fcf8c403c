"""One 429/503 with an absurd Retry-After (a proxy, a CDN's maintenance page, a wrong rate
limiter) holds orders for at most `backoff_cap_s`, not as long as it says (outside review)."""

from __future__ import annotations

from fakes import Clock
from test_forwarder import Events, events, order  # noqa: F401  (fixture)

from appliance.forwarder import Forwarder
from appliance.outbox import Outbox
from appliance.outbox_items import Kind, State
from appliance.sandbox.server import LeatSandbox

DAY = 86400  # the sandbox accepts at most a day; Leat-side nothing bounds it


def test_a_retry_after_of_a_day_holds_orders_for_the_backoff_cap_at_most(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    ids = [outbox.enqueue(Kind.ORDER, f"RA-{n}", order(f"RA-{n}")).item.id for n in range(3)]
    sandbox.faults.set(rate_limit_retry_after=DAY)  # one burst of 429s (the first pass)...
    forwarder.drain_once()
    sandbox.faults.clear()  # ...then Leat is fine again
    ids.append(outbox.enqueue(Kind.ORDER, "RA-new", order("RA-new")).item.id)  # a new sale
    # twice the backoff cap later (Leat has been fine all along), not a day
    for _ in range(2):
        clock.advance(forwarder.backoff_cap_s)
        forwarder.drain_once()
    states = [outbox.get(i).state for i in ids]  # type: ignore[union-attr]
    waits = [outbox.get(i).next_attempt_at - clock.now for i in ids]  # type: ignore[union-attr]
    assert states == [State.DELIVERED] * 4, f"orders still held; next attempt in {max(waits):.0f} s"

