"""Puts the caller named by the bearer token on the context."""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from gptmini_graphql.auth.tokens import bearer_token
from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import Unauthenticated


class JWTContextExtension(SchemaExtension):
    """A bad token is not an error yet: only fields that need a user raise it,
    so `login` still works for a client holding an expired token."""

    def on_operation(self) -> Iterator[None]:
        context: RequestContext = self.execution_context.context
        # Decided afresh for every operation: a WebSocket's context outlives
        # the token its connection began with.
        context.user, context.auth_error = None, None
        try:
            token = bearer_token(context.authorization)
            if token is not None:
                context.user = context.services.tokens.verify(token)
        except Unauthenticated as error:
            context.auth_error = error
        yield
