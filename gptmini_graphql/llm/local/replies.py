"""The embedded model's answers in OpenAI's shapes: a completion, stream
chunks (as server-sent events) and errors, `{"error": {"message", "type",
"param", "code"}}`.

The dicts here are the wire format, not types of ours: the API reads them
back (llm/calls.py, llm/streaming.py) into the seam's ChatAnswer, as from
any upstream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from gptmini_graphql.llm.answers import FinishReason, TokenLogprob, TokenUsage
from gptmini_graphql.llm.local.chat import Completion


@dataclass(frozen=True)
class Reply:
    """What every part of one answer carries."""

    id: str
    created: int
    model: str

    def completion(self, completion: Completion) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "logprobs": logprobs_body(completion.logprobs),
                    "finish_reason": completion.finish_reason.value,
                }
            ],
            "usage": usage_body(completion.usage),
        }

    def chunk(
        self, delta: dict[str, str], finish_reason: FinishReason | None = None
    ) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": None if finish_reason is None else finish_reason.value,
        }
        return self._chunk([choice])

    def usage_chunk(self, usage: TokenUsage) -> dict[str, Any]:
        return self._chunk([]) | {"usage": usage_body(usage)}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


def logprobs_body(entries: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if entries is None:
        return None

    def token(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [
            token(text, logprob) | {"top_logprobs": [token(t, lp) for t, lp in top]}
            for text, logprob, top in entries
        ]
    }


def usage_body(usage: TokenUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def error_body(
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(message, kind, code, param), status_code=status, headers=headers
    )


def validation_error(exc: ValidationError) -> JSONResponse:
    problems = [
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
    ]
    first = exc.errors()[0]["loc"]
    return error(
        400,
        "Invalid request: " + "; ".join(problems[:5]),
        param=".".join(map(str, first)) or None,
    )


def sse(data: Mapping[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()
