"""Puts the caller named by the bearer token (an access token or an API
key) on the context."""

from __future__ import annotations

from gptmini_graphql.auth.tokens import bearer_token
from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import DatabaseUnavailable, Unauthenticated


async def identify_caller(context: RequestContext) -> None:
    """A bad token is not an error yet: only fields that need a user raise it,
    so `login` still works for a client holding an expired token."""
    # Decided afresh for every operation: a WebSocket's context outlives
    # the token its connection began with, and a revocation ends it.
    context.identify(None)
    context.auth_error = None
    try:
        token = bearer_token(context.authorization)
        if token is not None:
            identities = context.services.accounts.identities
            context.identify(await identities.identify(token))
    except (Unauthenticated, DatabaseUnavailable) as error:
        # Raised by the first field that needs a caller.
        context.auth_error = error
