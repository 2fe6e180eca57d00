"""How any step refuses a request: `Refusal`, and the response it becomes.

Every refusal is a GraphQL-shaped body whose errors carry `extensions.code`.
A request that is not a GraphQL request at all is refused with either JSON
media type: 400 (bad JSON, a parameter of the wrong type, no query), 405 (a
mutation over GET: `Allow: POST`; a method other than GET and POST), 406,
415 (a body that is not `application/json` in UTF-8). A GraphQL request
error (`request_error`) is answered as status.py says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cross_web import HTTPException
from starlette.responses import Response

from gptmini_graphql.errors import (
    BAD_REQUEST,
    METHOD_NOT_ALLOWED,
    NOT_ACCEPTABLE,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    error_body,
)
from gptmini_graphql.http.negotiation import GRAPHQL_RESPONSE_JSON, JSON
from gptmini_graphql.http.status import request_error_status

# The code of what Strawberry refuses by itself, by its status.
_HTTP_STATUS_CODES = {
    400: BAD_REQUEST,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    406: NOT_ACCEPTABLE,
    413: PAYLOAD_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
}


class Refusal(Exception):
    """The request is answered with this error instead of being run.

    `request_error`: a GraphQL request error (200 with application/json,
    status.py's status with graphql-response+json); otherwise the request
    itself is refused with `status` whatever the media type.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        request_error: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.request_error = request_error

    @classmethod
    def from_http_exception(cls, error: HTTPException) -> Refusal:
        """What Strawberry refuses by itself (a method other than GET/POST...)."""
        headers = {"Allow": "GET, POST"} if error.status_code == 405 else None
        code = _HTTP_STATUS_CODES.get(error.status_code, BAD_REQUEST)
        return cls(error.status_code, code, error.reason, headers=headers)

    def response(self, media_type: str | None) -> Response:
        """The answer, in the negotiated media type if it is a JSON one."""
        if media_type not in (JSON, GRAPHQL_RESPONSE_JSON):
            media_type = JSON
        status, headers = self.status, self.headers
        if self.request_error:
            if media_type == JSON:
                status = 200
            else:
                status, extra = request_error_status(
                    [{"extensions": {"code": self.code}}]
                )
                headers = {**extra, **headers}
        return Response(
            json.dumps(error_body(self.message, self.code)),
            status_code=status,
            headers={**headers, "Content-Type": f"{media_type}; charset=utf-8"},
        )


def bad_request(message: str) -> Refusal:
    return Refusal(400, BAD_REQUEST, message)
