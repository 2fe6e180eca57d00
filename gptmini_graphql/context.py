"""What resolvers see: the context of one operation, over the shared services."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from limits import RateLimitItem
from starlette.requests import HTTPConnection

from gptmini_graphql.auth.principal import Principal
from gptmini_graphql.errors import AppError, Forbidden, Unauthenticated
from gptmini_graphql.llm.cache import CachePolicy, Mode
from gptmini_graphql.llm.caller import CallerLLM
from gptmini_graphql.services import Services
from gptmini_graphql.spend.enforcement import Caller, Left
from gptmini_graphql.spend.meter import Meter
from gptmini_graphql.tasks.results import TaskResult


@dataclass(slots=True)
class RequestContext:
    services: Services
    connection: HTTPConnection
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    # Who calls (user, role, session or API key), and their name for logs,
    # rate limits and the cache scope.
    principal: Principal | None = None
    user: str | None = None
    auth_error: AppError | None = None
    operation_name: str | None = None
    root_fields: Counter[str] = field(default_factory=Counter)
    # Root fields declared as calling the model (schema/llm_fields.py).
    model_calls: int = 0
    inputs: dict[str, object] = field(default_factory=dict)
    results: list[TaskResult] = field(default_factory=list)
    streaming: bool = False
    # graphql-transport-ws's connection_init payload (Strawberry fills it in).
    connection_params: dict[str, object] | None = None
    # What the operation's budgets have left (the result's extensions), and
    # the RateLimit headers of an HTTP response.
    budget_left: Left = field(default_factory=Left)
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def authorization(self) -> str | None:
        """The Authorization header, or its copy in connection_init's payload
        (browsers cannot set headers on a WebSocket)."""
        params = self.connection_params or {}
        value = params.get("Authorization") or params.get("authorization")
        if isinstance(value, str):
            return value
        return self.connection.headers.get("authorization")

    @property
    def client_address(self) -> str:
        client = self.connection.client
        return client.host if client else "unknown"

    def identify(self, principal: Principal | None) -> None:
        self.principal = principal
        self.user = principal.username if principal else None

    def require_user(self) -> Principal:
        """The caller, or UNAUTHENTICATED (with why, when a token was sent)."""
        if self.principal is None:
            raise self.auth_error or Unauthenticated(
                "Log in first and send 'Authorization: Bearer <token>' "
                "(an access token or an API key)."
            )
        return self.principal

    def require_session(self) -> Principal:
        """A logged-in user: a leaked API key must not mint keys or passwords."""
        principal = self.require_user()
        if principal.session_id is None:
            raise Forbidden("API keys cannot do this: log in with a password.")
        return principal

    def require_admin(self) -> Principal:
        principal = self.require_user()
        if not principal.is_admin:
            raise Forbidden("Only an admin may do this.")
        return principal

    @property
    def rate_limits(self) -> list[RateLimitItem]:
        """The caller's own limits when an admin set them, else RATE_LIMIT."""
        own = self.principal.rate_limits if self.principal else None
        return list(own) if own else self.services.settings.rate_limits

    def authorized_llm(self, field: str) -> CallerLLM:
        """The LLM, for an authenticated caller only, from a field declared
        as calling it (the rate limit counted it); its calls are reserved
        against the caller's budgets and written to the ledger as `field`'s."""
        principal = self.require_user()
        assert self.user is not None
        if not self.model_calls:
            raise RuntimeError(
                "a field called the model without being declared with "
                "llm_field/llm_subscription: it would escape the rate limit"
            )
        shared = self.services.settings.cache_scope == "shared"
        policy = CachePolicy(scope="*" if shared else self.user, mode=self.cache_mode)
        caller = Caller(
            principal.user_id,
            principal.api_key_id,
            dict(principal.budgets),
            dict(principal.key_budgets) if principal.api_key_id else None,
        )
        meter = Meter(
            self.services.spend,
            caller,
            request_id=self.request_id,
            operation=self.operation_name,
            field=field,
            left=self.budget_left,
        )
        return CallerLLM(self.services.llm, policy, meter)

    @property
    def cache_mode(self) -> Mode:
        """`Cache-Control: no-cache` asks for a fresh answer (and keeps it);
        `no-store` neither reads nor writes the cache."""
        directives = self.connection.headers.get("cache-control", "").lower()
        if "no-store" in directives:
            return "bypass"
        if "no-cache" in directives:
            return "refresh"
        return "use"

    def record(self, result: TaskResult) -> None:
        """Keep a result's model and usage for the operation's log line (each
        operation has a context of its own: see OperationScopeExtension)."""
        self.results.append(result)
