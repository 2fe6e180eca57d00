"""/graphql over the graphql-transport-ws WebSocket: who the connection is
(connection_init must carry a token), at most so many subscriptions at once,
and persisted queries as over HTTP."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from graphql import GraphQLFormattedError
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ErrorMessage,
    SubscribeMessage,
)

from gptmini_graphql.auth.tokens import bearer_token
from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import DatabaseUnavailable, RateLimited, Unauthenticated
from gptmini_graphql.http.persisted import subscribe_payload
from gptmini_graphql.persisted_queries import PersistedQueries, PersistedQueryError


@runtime_checkable
class _WithPersistedQueries(Protocol):
    persisted_queries: PersistedQueries


async def authenticate_connection(context: RequestContext) -> None:
    """Names the connection's user from connection_init, or rejects it
    (Strawberry closes it with 4403 Forbidden)."""
    try:
        token = bearer_token(context.authorization)
        if token is None:
            raise Unauthenticated("connection_init must carry Authorization.")
        identities = context.services.accounts.identities
        context.identify(await identities.identify(token))
    except (Unauthenticated, DatabaseUnavailable) as error:
        raise ConnectionRejectionError(
            {"message": error.message, "extensions": error.extensions}
        ) from error


class TransportWSHandler(BaseGraphQLTransportWSHandler[RequestContext, None]):
    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        new = self.connection_acknowledged and message["id"] not in self.operations
        if new and self._at_cap():
            # Strawberry refuses past the cap too, but with an error without a code.
            cap = self.max_subscriptions_per_connection
            error = RateLimited(
                f"At most {cap} subscriptions may run at once on one connection."
            )
            await self.send_coded_error(message["id"], error.message, error.extensions)
            return
        payload = message.get("payload")
        if new and isinstance(payload, dict):
            assert isinstance(self.view, _WithPersistedQueries)
            try:
                payload = await subscribe_payload(self.view.persisted_queries, payload)
            except PersistedQueryError as error:
                await self.send_coded_error(
                    message["id"], error.message, {"code": error.code}
                )
                return
            message = message.copy()
            message["payload"] = payload
        await super().handle_subscribe(message)

    def _at_cap(self) -> bool:
        cap = self.max_subscriptions_per_connection
        return cap is not None and len(self.operations) >= cap

    async def send_coded_error(
        self, operation_id: str, message: str, extensions: dict[str, Any]
    ) -> None:
        error: GraphQLFormattedError = {"message": message, "extensions": extensions}
        await self.send_message(
            ErrorMessage(id=operation_id, type="error", payload=[error])
        )
