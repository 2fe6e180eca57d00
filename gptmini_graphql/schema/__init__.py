"""The GraphQL schema: queries, mutations and the extensions every operation runs."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, ValidationCache

from gptmini_graphql.extensions.auth import JWTContextExtension
from gptmini_graphql.extensions.errors import ErrorCodesExtension
from gptmini_graphql.extensions.rate_limit import RateLimitExtension
from gptmini_graphql.schema.mutation import Mutation
from gptmini_graphql.schema.query import Query
from gptmini_graphql.schema.subscription import Subscription


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: Any = None
    ) -> None:
        """Strawberry logs every error with its trace; the endpoint logs ours
        once, in the operation's own JSON line."""


def build_schema(cache_size: int = 256) -> Schema:
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # Classes and factories, never instances: an instance would be shared
        # by concurrent requests.
        extensions=[
            ErrorCodesExtension,
            JWTContextExtension,
            RateLimitExtension,
            lambda: ParserCache(maxsize=cache_size),
            lambda: ValidationCache(maxsize=cache_size),
        ],
    )
