"""One model call's accounting, around the call itself:

    hold = await meter.reserve(body, price)    worst case, or BUDGET_EXCEEDED
    ... the upstream call ...
    await meter.settle(hold, ...)              the real cost; the rest released
    (or meter.release(hold, outcome) on failure: nothing charged)

and one ledger row either way. An answer served from the response cache
(or shared with another request's call) never reserves: `meter.free(...)`
writes its row at cost 0.

The worst case is worst_case.py's; reserving and settling it against the
caller's budgets, and refusing, is enforcement.py's (`Spend`, the app's).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gptmini_graphql.llm.answers import TokenUsage
from gptmini_graphql.settings import ModelPrice
from gptmini_graphql.spend import budgets as budgets_
from gptmini_graphql.spend.budgets import to_nano
from gptmini_graphql.spend.enforcement import Caller, Hold, Left, Spend
from gptmini_graphql.spend.ledger import Entry
from gptmini_graphql.spend.worst_case import worst_case


class Meter:
    """The accounting of one caller's calls from one field of an operation."""

    def __init__(
        self,
        spend: Spend,
        caller: Caller,
        *,
        request_id: str,
        operation: str | None,
        field: str,
        left: Left,
    ) -> None:
        self.spend = spend
        self.caller = caller
        self.request_id = request_id
        self.operation = operation
        self.field = field
        self.left = left

    async def reserve(self, body: Mapping[str, Any], price: ModelPrice | None) -> Hold:
        usd_nano, tokens = worst_case(body, price)
        prompt = tokens - int(body["max_tokens"])
        hold = await self.spend.reserve(
            self.caller, usd_nano, tokens, prompt, self.left
        )
        hold.priced = price is not None
        return hold

    def keep_due(self, hold: Hold) -> bool:
        return self.spend.keep_due(hold)

    async def keep(self, hold: Hold) -> None:
        await self.spend.keep(self.caller, hold)

    async def settle(
        self,
        hold: Hold,
        *,
        model: str,
        upstream: str | None,
        usage: TokenUsage | None,
        outcome: str,
    ) -> None:
        """Charge the real usage; None (the upstream never said): the
        reservation's worst case, marked as estimated in the ledger."""
        if usage is None:
            usd_nano, tokens = hold.usd_nano, hold.tokens
            usage = TokenUsage(
                hold.prompt_tokens,
                hold.tokens - hold.prompt_tokens,
                0,
                # An unknown price stays unknown (unpricedRequests), not $0.
                hold.usd_nano / budgets_.NANO if hold.priced else None,
            )
            estimated = True
        else:
            usd_nano = to_nano(usage.cost_usd) if usage.cost_usd is not None else 0
            tokens = usage.total_tokens
            estimated = False
        self._row(
            hold.at, hold.started, model, upstream, usage, outcome, estimated=estimated
        )
        self.spend.settle(self.caller, hold, usd_nano, tokens, self.left)

    async def release(self, hold: Hold, *, model: str, outcome: str) -> None:
        """A call that failed before the model answered: nothing charged."""
        self._row(hold.at, hold.started, model, None, TokenUsage(0, 0, 0, 0.0), outcome)
        self.spend.settle(self.caller, hold, 0, 0, self.left)

    def free(self, started: float, model: str, usage: TokenUsage) -> None:
        """An answer served without a call of ours: cost 0, `cached`."""
        at = self.spend.clock()
        self._row(at, started, model, None, usage, "OK", cached=True)

    def _row(
        self,
        at: float,
        started: float,
        model: str,
        upstream: str | None,
        usage: TokenUsage,
        outcome: str,
        *,
        cached: bool = False,
        estimated: bool = False,
    ) -> None:
        cost = usage.cost_usd
        self.spend.ledger.record(
            Entry(
                at=datetime.fromtimestamp(at, UTC),
                user_id=self.caller.user_id,
                api_key_id=self.caller.api_key_id,
                request_id=self.request_id[:64],
                operation=(self.operation or None) and self.operation[:100],
                field=self.field[:64],
                model=model[:100],
                upstream=upstream,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                cost_nano_usd=0
                if cached
                else (None if cost is None else to_nano(cost)),
                cached=cached,
                estimated=estimated,
                latency_ms=round((time.perf_counter() - started) * 1000),
                outcome=outcome[:40],
            )
        )
