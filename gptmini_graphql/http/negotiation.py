"""Which media type the answer takes, from the request's `Accept` (RFC 9110).

* `application/graphql-response+json` when the client lists it (first among
  equals); `application/json` for `application/json`, `*/*`, `application/*`
  or no Accept at all; `text/event-stream` (SSE) and Apollo's
  `multipart/mixed;subscriptionSpec=1.0` stream; anything else is 406.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from strawberry.http.streaming import HTTPStreamTransport

from gptmini_graphql.http.exchange import Exchange

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
SSE = "text/event-stream"


def negotiate(accept: str | None, streams: Iterable[HTTPStreamTransport]) -> Exchange:
    """The most preferred media type we can answer in; `streams` are the
    transports this endpoint streams subscriptions with."""
    if accept is None or not accept.strip():
        return Exchange(JSON)
    best: tuple[tuple[float, int, int], Exchange] | None = None
    for index, item in enumerate(accept.split(",")):
        kind, params = media_range(item)
        q = _quality(params)
        if q <= 0:
            continue
        specific = 1
        if kind in (GRAPHQL_RESPONSE_JSON, JSON):
            if not utf8(params):
                continue
            choice = Exchange(kind)
        elif kind in ("*/*", "application/*"):
            choice, specific = Exchange(JSON), 0
        elif stream := _stream_for(kind, params, streams):
            choice = Exchange(kind, protocol=stream.protocol)
        else:
            continue
        rank = (q, specific, -index)
        if best is None or rank > best[0]:
            best = (rank, choice)
    return best[1] if best else Exchange(None)


def _stream_for(
    kind: str, params: dict[str, str], streams: Iterable[HTTPStreamTransport]
) -> HTTPStreamTransport | None:
    # Multipart looks at the parameters too (subscriptionSpec=1.0), SSE at
    # the media type alone.
    for stream in streams:
        if stream.accepts_content_type(kind, params) or stream.accepts(kind):
            return stream
    return None


def media_range(item: str) -> tuple[str, dict[str, str]]:
    """`type/subtype` in lower case, and its parameters by lower-case name."""
    kind, *parts = item.split(";")
    params = {}
    for part in parts:
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), params


def utf8(params: Mapping[str, str]) -> bool:
    return params.get("charset", "utf-8").lower() in ("utf-8", "utf8")


def _quality(params: Mapping[str, str]) -> float:
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0
