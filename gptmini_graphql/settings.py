"""Settings: the only reader of the environment (and of `.env`).

Every setting is an environment variable of the same name in upper case;
`.env.example` lists them all with a one-line comment each.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from limits import RateLimitItem, parse_many
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"
DEFAULT_PASSWORD = "1234"
MIN_SECRET_BYTES = 32


class InsecureSettings(ValueError):
    """Production asked for with development secrets."""


class ModelPrice(BaseModel):
    """USD per one million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)


LOCAL_MODEL_NAME = "smollm2-135m-instruct"

DEFAULT_PRICES = {
    "gpt-4o-mini": ModelPrice(input=0.15, output=0.60, cached_input=0.075),
    LOCAL_MODEL_NAME: ModelPrice(input=0, output=0, cached_input=0),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Serving
    environment: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # After SIGTERM, how long open streams may go on before they are ended.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=300)

    # Login and tokens (the seed's names)
    fake_username: str = "test_user"
    fake_password: SecretStr = SecretStr(DEFAULT_PASSWORD)
    jwt_secret: SecretStr = SecretStr(DEFAULT_JWT_SECRET)
    # Secrets that signed earlier tokens: they still verify, nothing signs with them.
    jwt_previous_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list
    )
    # Access tokens are short-lived; the refresh token keeps a session going.
    jwt_ttl_seconds: int = Field(default=900, ge=60, le=24 * 3600)
    refresh_token_ttl_days: int = Field(default=30, ge=1, le=365)
    # How long a replica may act on what it knows about a user, session or API
    # key: the bound on a revocation made elsewhere taking effect here.
    auth_cache_ttl_seconds: float = Field(default=30.0, ge=0, le=300)

    # Users, keys and sessions. Unset: a SQLite file under data/ (git ignores it).
    database_url: str | None = None
    # Alembic migrations to head on start; off when operators run `db upgrade`.
    database_migrate_on_start: bool = True

    # The LLM upstream (any OpenAI-compatible endpoint)
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    llm_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    # A second OpenAI-compatible upstream, tried while the first is unavailable.
    llm_fallback_base_url: str | None = None
    llm_fallback_api_key: SecretStr | None = None
    llm_fallback_model: str | None = None
    # Consecutive failures that open the circuit, and how long it stays open.
    circuit_breaker_failures: int = Field(default=5, ge=1)
    circuit_breaker_reset_seconds: float = Field(default=30.0, gt=0)
    model_prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES)
    )
    # How JSON answers are asked for: `auto` finds out per upstream (strict
    # json_schema, then json_object with the schema, then instructions); a
    # mode pins it.
    llm_structured_output: Literal["auto", "json_schema", "json_object", "prompt"] = (
        "auto"
    )
    # How long /readyz reuses an upstream's model list (GET /models).
    llm_models_cache_seconds: float = Field(default=60.0, ge=0)

    # The embedded local model (used when no upstream is configured)
    llm_backend: Literal["auto", "openai", "local"] = "auto"
    local_model_path: Path = Path("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    local_model_name: str = LOCAL_MODEL_NAME
    local_context_size: int = Field(default=2048, ge=256)
    # One core left to the API: llama.cpp's threads spin, and slow down
    # sharply when anything else wants their core. Measured on 2 cores (make
    # bench, embedded, two runs): while the API served other requests, 1
    # thread generated 34-53 tokens/s and 2 threads 10-21.
    local_threads: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) - 1), ge=1
    )
    local_queue_size: int = Field(default=8, ge=0)
    # Above 1, repeated tokens are made less likely: small models loop without it.
    local_repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    # Where the embedded model's server runs: `http://host:port` or
    # `unix:/path/to.sock`. Unset, the API starts and supervises one itself.
    local_model_url: str | None = None

    # The response cache (deterministic answers only; 0 seconds turns it off)
    cache_ttl_seconds: float = Field(default=3600.0, ge=0)
    cache_max_entries: int = Field(default=1024, ge=1)  # in memory, without Redis
    cache_scope: Literal["user", "shared"] = "user"

    # Limits
    rate_limit: str = "30/minute;1000/day"
    login_rate_limit: str = "10/minute"  # attempts per client address
    # Failed logins per username, from anywhere; past it only addresses with no
    # failed login for that username may try (slows a guessing farm, never
    # locks the owner out: see auth/login_throttle.py).
    login_username_failure_limit: str = "100/hour"
    redis_url: str | None = None
    # While Redis is unreachable: `memory` (each process counts the same limits
    # by itself), `closed` (refuse) or `open` (let through). Logins never fail open.
    rate_limit_redis_outage: Literal["memory", "closed", "open"] = "memory"
    login_rate_limit_redis_outage: Literal["memory", "closed"] = "memory"
    # Budgets per user (an admin can override them per user, and set a key's
    # own); unset: unlimited. USD, or tokens (prompt + completion).
    # Bounded as spend/budgets.py says (MAX_USD, MAX_TOKENS).
    budget_usd_per_day: float | None = Field(default=None, ge=0, le=1_000_000)
    budget_usd_per_month: float | None = Field(default=None, ge=0, le=1_000_000)
    budget_tokens_per_day: int | None = Field(default=None, ge=0, le=2**31 - 1)
    budget_tokens_per_month: int | None = Field(default=None, ge=0, le=2**31 - 1)
    # Tokens per minute per user, kept like a budget (RATE_LIMITED past it).
    token_rate_limit: int | None = Field(default=None, ge=0, le=2**31 - 1)
    # How long the usage ledger keeps rows (`usage prune` deletes older ones):
    # at least a month, since a month's budgets are seeded from its rows.
    ledger_retention_days: int | None = Field(default=400, ge=31)
    max_input_chars: int = Field(default=20_000, ge=1)
    max_completion_tokens: int = Field(default=4096, ge=1)

    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    max_query_depth: int = Field(default=10, ge=1)
    max_aliases: int = Field(default=15, ge=1)
    max_query_tokens: int = Field(default=1000, ge=10)
    max_llm_fields: int = Field(default=5, ge=1)

    # GraphQL
    graphql_cache_size: int = Field(default=256, ge=1)
    max_subscriptions_per_connection: int = Field(default=5, ge=1)
    introspection: bool | None = None  # default: on in development only
    graphiql: bool | None = None  # default: on in development only
    persisted_queries: Literal["off", "apq", "allowlist"] = "apq"
    persisted_queries_file: Path | None = None  # the allowlist's manifest
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_texts: bool = False  # debugging only: log request texts, not just lengths

    @field_validator("rate_limit", "login_rate_limit", "login_username_failure_limit")
    @classmethod
    def _parseable_limits(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a rate limit like '30/minute;1000/day'"
            ) from exc
        return value

    @field_validator(
        "openai_api_key",
        "openai_base_url",
        "redis_url",
        "llm_fallback_base_url",
        "llm_fallback_api_key",
        "llm_fallback_model",
        "local_model_url",
        "persisted_queries_file",
        "database_url",
        "introspection",
        "graphiql",
        "budget_usd_per_day",
        "budget_usd_per_month",
        "budget_tokens_per_day",
        "budget_tokens_per_month",
        "token_rate_limit",
        "ledger_retention_days",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _usable_database(cls, value: str | None) -> str | None:
        from gptmini_graphql.db.url import async_url

        async_url(value)  # raises, saying which URLs work
        return value

    @field_validator("model_prices")
    @classmethod
    def _on_top_of_defaults(cls, value: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        # Adding a model's price must not drop gpt-4o-mini's.
        return {**DEFAULT_PRICES, **value}

    @field_validator("cors_allow_origins", "jwt_previous_secrets", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # `https://a.example,https://b.example`, or a JSON list.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    def insecure_defaults(self) -> list[str]:
        """What must change before production, each naming its setting."""
        problems = []
        secret = self.jwt_secret.get_secret_value()
        if secret == DEFAULT_JWT_SECRET:
            problems.append("JWT_SECRET is the development default: set your own.")
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            problems.append(
                f"JWT_SECRET is {len(secret.encode())} bytes; use at least "
                f"{MIN_SECRET_BYTES} random bytes."
            )
        for previous in self.jwt_previous_secrets:
            if len(previous.get_secret_value().encode()) < MIN_SECRET_BYTES:
                problems.append(
                    f"JWT_PREVIOUS_SECRETS has a secret shorter than "
                    f"{MIN_SECRET_BYTES} bytes."
                )
        if self.fake_password.get_secret_value() == DEFAULT_PASSWORD:
            problems.append("FAKE_PASSWORD is the development default: set your own.")
        return problems

    def check(self) -> None:
        """Refuse to start production with development secrets."""
        if self.production and (problems := self.insecure_defaults()):
            raise InsecureSettings(
                "ENVIRONMENT=production refuses to start: " + " ".join(problems)
            )

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def introspection_enabled(self) -> bool:
        return not self.production if self.introspection is None else self.introspection

    @property
    def graphiql_enabled(self) -> bool:
        return not self.production if self.graphiql is None else self.graphiql

    @cached_property
    def rate_limits(self) -> list[RateLimitItem]:
        return parse_many(self.rate_limit)

    @cached_property
    def login_rate_limits(self) -> list[RateLimitItem]:
        return parse_many(self.login_rate_limit)

    @cached_property
    def login_username_failure_limits(self) -> list[RateLimitItem]:
        return parse_many(self.login_username_failure_limit)

    @property
    def pinned_structured_output(
        self,
    ) -> Literal["json_schema", "json_object", "prompt"] | None:
        mode = self.llm_structured_output
        return None if mode == "auto" else mode

    @property
    def upstream_configured(self) -> bool:
        return self.openai_api_key is not None or self.openai_base_url is not None

    @property
    def backend(self) -> Literal["openai", "local"]:
        """`auto` is OpenAI(-compatible) when a key or base URL is set, else local."""
        if self.llm_backend != "auto":
            return self.llm_backend
        return "openai" if self.upstream_configured else "local"
