"""What a model call that ended without a usable answer charges its meter.

The meter itself (reserve, settle, the ledger row) is spend/meter.py's; the
LLM facade (client.py) reserves before each call and settles after it. Here:
which failures may have been billed all the same, and the outcome a ledger
row names.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gptmini_graphql.errors import AppError, UpstreamTimeout
from gptmini_graphql.llm.malformed import MalformedAnswer

if TYPE_CHECKING:
    from gptmini_graphql.spend.enforcement import Hold
    from gptmini_graphql.spend.meter import Meter

# The caller went away, or our deadline passed: the upstream may have
# generated (and billed) the answer all the same.
CALLER_LEFT = (asyncio.CancelledError, GeneratorExit, UpstreamTimeout)


def error_outcome(error: BaseException) -> str:
    if isinstance(error, AppError):
        return error.code
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "INTERNAL_SERVER_ERROR"


async def unanswered(
    meter: Meter, hold: Hold, model: str, error: BaseException
) -> None:
    """A call that got no answer: nothing charged if the upstream refused or
    failed; the reservation if we stopped waiting (it may have billed), or
    if it answered in a shape we cannot use (it billed, only did not say)."""
    if isinstance(error, CALLER_LEFT) or isinstance(error.__cause__, MalformedAnswer):
        await meter.settle(
            hold, model=model, upstream=None, usage=None, outcome=error_outcome(error)
        )
    else:
        await meter.release(hold, model=model, outcome=error_outcome(error))
