"""The GraphQL schema: queries, mutations and the extensions every operation runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import strawberry
from graphql import GraphQLError, NoSchemaIntrospectionCustomRule
from graphql import execute as graphql_execute
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter
from strawberry.types import ExecutionContext
from strawberry.types.base import get_object_definition

from gptmini_graphql.extensions.operation import OperationExtension
from gptmini_graphql.extensions.parsing import Documents
from gptmini_graphql.extensions.query_limits import query_limit_rules
from gptmini_graphql.extensions.runner import HookRunner
from gptmini_graphql.schema import prepared
from gptmini_graphql.schema.admin import AdminMutation, AdminQuery
from gptmini_graphql.schema.executor import CodedExecutor
from gptmini_graphql.schema.keys import KeyMutation
from gptmini_graphql.schema.llm_fields import llm_field_names
from gptmini_graphql.schema.mutation import Mutation as SessionMutation
from gptmini_graphql.schema.query import Query as TaskQuery
from gptmini_graphql.schema.subscription import Subscription
from gptmini_graphql.settings import Settings

# graphql-core's suggestions: " Did you mean 'text'?", "... the enum value 'X'?"
_SUGGESTION = re.compile(r"\s*Did you mean .*\?$", re.DOTALL)


@strawberry.type
class Query(TaskQuery, AdminQuery):
    pass


@strawberry.type
class Mutation(SessionMutation, KeyMutation, AdminMutation):
    pass


class Schema(strawberry.Schema):
    @staticmethod
    def remove_field_suggestion(error: GraphQLError) -> None:
        """Every suggestion, not only fields': argument, type and enum value
        names are what hidden introspection hides too. (Strawberry calls this
        for each error when `disable_field_suggestions` is set.)"""
        error.message = _SUGGESTION.sub("", error.message)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: Any = None
    ) -> None:
        """Strawberry logs every error with its trace; the endpoint logs ours
        once, in the operation's own JSON line."""

    def _get_execute_function(self) -> Callable[..., Any]:
        """graphql-core's execute, or ours where a document's operation has
        a plan (prepared.py)."""
        function = super()._get_execute_function()
        return prepared.execute if function is graphql_execute else function

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> HookRunner:
        """Ours wraps each extension's hooks once, not on every operation."""
        return HookRunner(execution_context=execution_context, extensions=extensions)


class _Names(NameConverter):
    """Strawberry's names, each converted to camelCase once: it converts
    every argument's name again on each call of its resolver."""

    def __init__(self) -> None:
        super().__init__()
        self._converted: dict[str, str] = {}  # the schema's names: a few

    def apply_naming_config(self, name: str) -> str:
        converted = self._converted.get(name)
        if converted is None:
            converted = self._converted[name] = super().apply_naming_config(name)
        return converted


def build_schema(settings: Settings | None = None) -> Schema:
    """The schema with the limits and caches `settings` ask for (the SDL is the
    same whatever they are)."""
    settings = settings or Settings(_env_file=None)
    config = StrawberryConfig(
        # "Did you mean …" would list names that introspection hides.
        disable_field_suggestions=not settings.introspection_enabled,
        name_converter=_Names(),
    )
    llm_fields = llm_field_names(Query, Mutation, Subscription, config=config)
    rules = query_limit_rules(
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_aliases,
        max_llm_fields=settings.max_llm_fields,
        llm_fields=llm_fields,
    )
    if not settings.introspection_enabled:
        rules.append(NoSchemaIntrospectionCustomRule)
    documents = Documents(
        max_tokens=settings.max_query_tokens,
        cache_size=settings.graphql_cache_size,
        rules=rules,
    )
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=config,
        execution_context_class=CodedExecutor,
        # A factory, never an instance: an instance would be shared by
        # concurrent requests.
        extensions=[lambda: OperationExtension(documents, llm_fields)],
    )


def root_field_names(schema: strawberry.Schema) -> frozenset[str]:
    """The GraphQL names of the root fields of `schema`'s queries, mutations
    and subscriptions."""
    roots = (schema.query, schema.mutation, schema.subscription)
    return frozenset(
        schema.config.name_converter.from_field(field)
        for root in roots
        if root is not None
        for field in get_object_definition(root, strict=True).fields
    )
