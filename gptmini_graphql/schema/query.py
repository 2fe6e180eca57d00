"""The four LLM-backed queries. Resolvers stay thin: arguments in, task out."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import Unauthenticated
from gptmini_graphql.schema.accounts import User
from gptmini_graphql.schema.llm_fields import llm_field
from gptmini_graphql.tasks import analyze, complete, summarize, translate
from gptmini_graphql.tasks.results import (
    Completion,
    SentimentAnalysis,
    Summary,
    Translation,
)

Context = Info[RequestContext, None]


@strawberry.type
class Query:
    @strawberry.field(description="The caller: their account and API keys.")
    async def me(self, info: Context) -> User:
        caller = info.context.require_user()
        user = await info.context.services.accounts.users.get_by_id(caller.user_id)
        if user is None:  # deleted since the cache looked
            raise Unauthenticated("The session has ended; log in again.")
        return User.of(user)

    @llm_field(description="Summarize a text in at most `maxWords` words.")
    async def summarize(
        self, info: Context, text: str, max_words: int = summarize.DEFAULT_MAX_WORDS
    ) -> Summary:
        llm = info.context.authorized_llm(info.field_name)
        result = await summarize.summarize(llm, text, max_words)
        info.context.record(result)
        return result

    @llm_field(
        description="Translate a text. Languages are ISO 639-1 codes ('fr') or "
        "English names ('French'); the source language is detected when omitted."
    )
    async def translate(
        self,
        info: Context,
        text: str,
        target_language: str,
        source_language: str | None = None,
    ) -> Translation:
        llm = info.context.authorized_llm(info.field_name)
        result = await translate.translate(llm, text, target_language, source_language)
        info.context.record(result)
        return result

    @llm_field(description="Continue a prompt as free text.")
    async def complete(
        self,
        info: Context,
        prompt: str,
        max_tokens: int = complete.DEFAULT_MAX_TOKENS,
        temperature: float = complete.DEFAULT_TEMPERATURE,
        system: str | None = None,
    ) -> Completion:
        llm = info.context.authorized_llm(info.field_name)
        result = await complete.complete(llm, prompt, max_tokens, temperature, system)
        info.context.record(result)
        return result

    @llm_field(description="The sentiment of a text.")
    async def analyze(self, info: Context, text: str) -> SentimentAnalysis:
        llm = info.context.authorized_llm(info.field_name)
        result = await analyze.analyze(llm, text)
        info.context.record(result)
        return result
