"""The errors an OpenAI-compatible upstream's call raises (llm/chat_client.py),
shaped as the openai SDK's, whose client this one replaced, so the rules that
read them (resilience.py, upstream.py, structured.py, local/connection.py,
metrics.py) read what they always read:

    APIError                    message; body (the `error` object of a JSON
     │                          error body), and its code, param and type
     ├── APIStatusError         a status other than 2xx: status_code, headers
     ├── APIConnectionError     no answer: refused, dropped, garbled, TLS
     │    └── APITimeoutError   no answer in time
     ├── StreamErrorEvent       an `error` event in a stream that had begun
     └── MalformedAnswer        a 200 that is no answer (malformed.py)
"""

from __future__ import annotations

import json

import httpx2


class APIError(Exception):
    """`body`: what the upstream said (a dict, text or None); `code`,
    `param` and `type` are read from it when it is a dict, as the SDK did."""

    def __init__(self, message: str, *, body: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body
        said = body if isinstance(body, dict) else {}
        self.code: object = said.get("code")
        self.param: object = said.get("param")
        self.type: object = said.get("type")


class APIStatusError(APIError):
    """The upstream answered with an error status."""

    def __init__(
        self, message: str, *, status_code: int, headers: httpx2.Headers, body: object
    ) -> None:
        super().__init__(message, body=body)
        self.status_code = status_code
        self.headers = headers

    @classmethod
    def of(cls, response: httpx2.Response) -> APIStatusError:
        """The error a read response with an error status is: its body's
        `error` object (or the whole body, or its text), and a message as
        the SDK's (which some rules search: resilience.about_the_request)."""
        status = response.status_code
        text = response.text.strip()
        body: object = text
        try:
            body = json.loads(text)
            message = f"Error code: {status} - {body}"
        except ValueError:
            message = text or f"Error code: {status}"
        if isinstance(body, dict):
            body = body.get("error", body)
        return cls(message, status_code=status, headers=response.headers, body=body)


class APIConnectionError(APIError):
    def __init__(self, message: str = "Connection error.") -> None:
        super().__init__(message)


class APITimeoutError(APIConnectionError):
    def __init__(self) -> None:
        super().__init__("Request timed out.")


class StreamErrorEvent(APIError):
    """The upstream failed a stream after its 200: it has no status; `body`
    is the event's `error` object."""
