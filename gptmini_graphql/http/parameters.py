"""The request's parameters, from the GET query string or the POST JSON body.

Anything that is not a GraphQL request is refused here, before anything
runs: a body that is not `application/json` in UTF-8 (415), JSON that does
not parse or holds a lone surrogate, a parameter of the wrong type, a batch
(this API takes one operation per request) (400).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cross_web import AsyncHTTPRequestAdapter

from gptmini_graphql.errors import UNSUPPORTED_MEDIA_TYPE
from gptmini_graphql.http.negotiation import JSON, media_range, utf8
from gptmini_graphql.http.refusals import Refusal, bad_request

# "\ud800": JSON may escape what UTF-8 cannot hold.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")

JSONDecoder = Callable[[str], object]


@dataclass(frozen=True, slots=True)
class Parameters:
    """What the client sent, type-checked; `query` may still be missing (a
    persisted query sends only its hash)."""

    query: str | None
    operation_name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] | None
    document_id: object = None


async def read_parameters(
    request: AsyncHTTPRequestAdapter, decode_json: JSONDecoder
) -> Parameters:
    if request.method == "GET":
        data: object = _query_params(request.query_params, decode_json)
    else:
        _check_content_type(request.content_type)
        data = _decode(await request.get_body(), "The request body", decode_json)
    if isinstance(data, list):
        raise bad_request("Batching is not enabled: send one operation a request.")
    return _checked(data)


def _checked(data: object) -> Parameters:
    if not isinstance(data, dict):
        raise bad_request('The request must be a JSON object with a "query".')
    query = data.get("query")
    if query is not None and not isinstance(query, str):
        raise bad_request('"query" must be a string.')
    operation_name = data.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise bad_request('"operationName" must be a string or null.')
    for name in ("variables", "extensions"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise bad_request(f'"{name}" must be an object or null.')
    return Parameters(
        query=query,
        operation_name=operation_name or None,
        variables=data.get("variables"),
        extensions=data.get("extensions"),
        document_id=data.get("documentId"),
    )


def _check_content_type(content_type: str | None) -> None:
    if content_type is None:
        raise Refusal(
            415, UNSUPPORTED_MEDIA_TYPE, f"Send the request with Content-Type: {JSON}."
        )
    kind, params = media_range(content_type)
    if kind != JSON or not utf8(params):
        raise Refusal(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {kind!r} is not supported: send {JSON} in UTF-8.",
        )


def _query_params(
    params: Mapping[str, str | None], decode_json: JSONDecoder
) -> dict[str, object]:
    data: dict[str, object] = dict(params)
    for name in ("variables", "extensions"):
        value = data.get(name)
        if value == "":
            data[name] = None
        elif isinstance(value, str):
            data[name] = _decode(value, f"The {name!r} parameter", decode_json)
    return data


def _decode(raw: str | bytes, what: str, decode_json: JSONDecoder) -> object:
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        value = decode_json(text)
        if _SURROGATE_ESCAPE.search(text):
            _check_unicode(value)
    except (ValueError, RecursionError) as error:
        raise bad_request(f"{what} is not valid JSON in UTF-8.") from error
    return value


def _check_unicode(value: object) -> None:
    """ValueError for a lone surrogate (`"\\ud800"`) anywhere in `value`."""
    if isinstance(value, str):
        value.encode("utf-8")  # UnicodeEncodeError is a ValueError
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key)
            _check_unicode(item)
    elif isinstance(value, list):
        for item in value:
            _check_unicode(item)
