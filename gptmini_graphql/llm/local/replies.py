"""The embedded model's answers in OpenAI's shapes: a completion, stream
chunks (as server-sent events) and errors, `{"error": {"message", "type",
"param", "code"}}`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from gptmini_graphql.llm.local.chat import Completion, TokenLogprob, Usage


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
                    "finish_reason": completion.finish_reason,
                }
            ],
            "usage": usage_body(completion.usage),
        }

    def chunk(
        self, delta: dict[str, str], finish_reason: str | None = None
    ) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return self._chunk([choice])

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
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
            token(e.token, e.logprob)
            | {"top_logprobs": [token(t, lp) for t, lp in e.top]}
            for e in entries
        ]
    }


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
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
