"""The LLM as one caller's request uses it: what tasks are given."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from gptmini_graphql.llm.answers import ChatAnswer, ChatStreamEnd
from gptmini_graphql.llm.cache import CachePolicy
from gptmini_graphql.llm.client import LLM
from gptmini_graphql.settings import Settings

if TYPE_CHECKING:
    from gptmini_graphql.spend.meter import Meter


class CallerLLM:
    """The LLM as one caller uses it: answers from the cache scope and with
    the cache mode of their request. Tasks get this, never the LLM itself."""

    def __init__(
        self, llm: LLM, cache: CachePolicy, meter: Meter | None = None
    ) -> None:
        self.llm = llm
        self.cache = cache
        self.meter = meter  # budgets and the ledger

    @property
    def settings(self) -> Settings:
        return self.llm.settings

    async def chat(self, messages: list[dict[str, str]], **options: Any) -> ChatAnswer:
        return await self.llm.chat(
            messages, cache=self.cache, meter=self.meter, **options
        )

    def stream_chat(
        self, messages: list[dict[str, str]], **options: Any
    ) -> AsyncGenerator[str | ChatStreamEnd, None]:
        return self.llm.stream_chat(messages, meter=self.meter, **options)
