"""Every series the server counts: its name, help text, labels and buckets.

Every name starts with `gptmini_`. No label carries a user, a text or a raw
path: label values come from small sets (route templates, the schema's root
fields, error codes, configured upstreams and models), so a client cannot
grow the number of series.

    gptmini_http_requests_total{method,route,status}
    gptmini_http_request_duration_seconds{method,route}          histogram
    gptmini_http_requests_in_flight
    gptmini_graphql_operations_total{operation,outcome}          queries, mutations
    gptmini_graphql_operation_duration_seconds{operation}        histogram
    gptmini_graphql_subscriptions_total{field,outcome}
    gptmini_graphql_subscriptions_active{field}
    gptmini_graphql_time_to_first_token_seconds{field}           histogram
    gptmini_upstream_request_duration_seconds{upstream,model,outcome,stream}
    gptmini_upstream_requests_in_flight{upstream}    the embedded model's queue
    gptmini_llm_tokens_total{model,kind}             kind: input, output, cached_input
    gptmini_llm_cost_usd_total{model}
    gptmini_cache_requests_total{result}             hit, coalesced, miss
    gptmini_cache_errors_total{operation}            read, write
    gptmini_cache_saved_cost_usd_total{model}
    gptmini_rate_limit_refusals_total{limit}         user, login-address, login-user
    gptmini_redis_outages_total                      times Redis was lost
    gptmini_redis_down                               1 while this process does without Redis
    gptmini_ledger_rows_written_total                usage ledger rows in the database
    gptmini_ledger_rows_dropped_total                rows lost: queue full, refused, or shutdown without a database
    gptmini_budget_refusals_total{budget}            calls refused by a budget or the token rate limit
    gptmini_budget_store_errors_total                budget steps Redis could not do
    gptmini_budget_settle_failures_total             reservations left to expire (charged their worst case)
    gptmini_build_info{version}

`operation` is the operation's root field (`summarize`, `login`, ...):
`multiple` for several, `none` when nothing ran (a document that did not
parse or validate), `other` for anything the schema does not have. The name
a client gives its operation is in the log line, not in a label.

What records them is metrics.py (`Metrics`, which bounds the label values)
and, for HTTP requests, metrics_middleware.py.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from gptmini_graphql import __version__

# Seconds. Requests and operations: from a cache hit (a millisecond) to a long
# completion; upstream calls and first tokens start slower.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)

# No `*_created` series: twice the series for a start time nobody charts (and
# multiprocess mode has none anyway). A switch of prometheus_client's own,
# for the whole process.
disable_created_metrics()


class MetricSeries:
    """The series of one app's metrics, made in its registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.http_requests = Counter(
            "gptmini_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "gptmini_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response (streams "
            "included).",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.http_in_flight = Gauge(
            "gptmini_http_requests_in_flight",
            "HTTP requests being answered now.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.operations = Counter(
            "gptmini_graphql_operations",
            "GraphQL queries and mutations over HTTP, by root field and outcome "
            "(OK or the first error's code).",
            ["operation", "outcome"],
            registry=registry,
        )
        self.operation_duration = Histogram(
            "gptmini_graphql_operation_duration_seconds",
            "Time to answer a GraphQL query or mutation.",
            ["operation"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.subscriptions = Counter(
            "gptmini_graphql_subscriptions",
            "GraphQL subscriptions ended, by field and outcome (OK, CANCELLED or "
            "a code).",
            ["field", "outcome"],
            registry=registry,
        )
        self.subscriptions_active = Gauge(
            "gptmini_graphql_subscriptions_active",
            "GraphQL subscriptions streaming now.",
            ["field"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "gptmini_graphql_time_to_first_token_seconds",
            "Time from a subscription's start to its first text delta.",
            ["field"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "gptmini_upstream_request_duration_seconds",
            "One call to an LLM upstream, retries included: to the whole answer, "
            "or for a stream (stream=true) to its start. outcome: ok, timeout, "
            "connection_error, cancelled, error, or the upstream's HTTP status.",
            ["upstream", "model", "outcome", "stream"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.upstream_in_flight = Gauge(
            "gptmini_upstream_requests_in_flight",
            "Requests at an LLM upstream now, streams until their end. For "
            'upstream="embedded" this is the embedded model\'s queue: the request '
            "generating and those waiting.",
            ["upstream"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.llm_tokens = Counter(
            "gptmini_llm_tokens",
            "Tokens of upstream answers, by model and kind (input, output, and "
            "cached_input: the part of input the provider had cached).",
            ["model", "kind"],
            registry=registry,
        )
        self.llm_cost = Counter(
            "gptmini_llm_cost_usd",
            "Cost of upstream answers in US dollars, by model (models with a price).",
            ["model"],
            registry=registry,
        )
        cache_requests = Counter(
            "gptmini_cache_requests",
            "Response cache lookups: hit, coalesced (answered by an identical "
            "request in flight) or miss.",
            ["result"],
            registry=registry,
        )
        self.cache_hit = cache_requests.labels("hit")
        self.cache_coalesced = cache_requests.labels("coalesced")
        self.cache_miss = cache_requests.labels("miss")
        self.cache_errors = Counter(
            "gptmini_cache_errors",
            "Response cache reads and writes that went without it (Redis "
            "unreachable, or an entry unreadable); the request went upstream.",
            ["operation"],
            registry=registry,
        )
        self.cache_saved_cost = Counter(
            "gptmini_cache_saved_cost_usd",
            "What answers served from the response cache would have cost, in US "
            "dollars.",
            ["model"],
            registry=registry,
        )
        self.rate_limit_refusals = Counter(
            "gptmini_rate_limit_refusals",
            "Requests refused by a rate limit, by limit (user, login-address, "
            "login-user).",
            ["limit"],
            registry=registry,
        )
        self.redis_outages = Counter(
            "gptmini_redis_outages",
            "Times this process lost its Redis; until it answered again, rate "
            "limits followed their outage policy and the response cache and "
            "persisted queries did without it.",
            registry=registry,
        )
        self.redis_down = Gauge(
            "gptmini_redis_down",
            "1 while this process cannot reach Redis (summed over workers in "
            "multiprocess mode).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.ledger_written = Counter(
            "gptmini_ledger_rows_written",
            "Usage ledger rows written to the database.",
            registry=registry,
        )
        self.ledger_dropped = Counter(
            "gptmini_ledger_rows_dropped",
            "Usage ledger rows lost: the queue was full while the database was "
            "unavailable, the database refused them, or shutdown could not "
            "write them.",
            registry=registry,
        )
        self.budget_refusals = Counter(
            "gptmini_budget_refusals",
            "Model calls refused by a budget or the token rate limit, by budget "
            "(user.usd_per_day, key.tokens_per_month, user.tokens_per_minute, "
            "...).",
            ["budget"],
            registry=registry,
        )
        self.budget_store_errors = Counter(
            "gptmini_budget_store_errors",
            "Steps of the budget store that Redis could not do (it failed, or "
            "was down); callers with budgets are refused with BUDGET_UNAVAILABLE "
            "meanwhile.",
            registry=registry,
        )
        self.budget_settle_failures = Counter(
            "gptmini_budget_settle_failures",
            "Reservations that could not be settled and are left to expire (each "
            "charged its worst case until then).",
            registry=registry,
        )
        build_info = Gauge(
            "gptmini_build_info",
            "Always 1; the version is a label.",
            ["version"],
            multiprocess_mode="max",
            registry=registry,
        )
        build_info.labels(__version__).set(1)
