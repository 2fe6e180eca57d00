"""Structured output: JSON answers held to a schema, whatever the upstream supports.

OpenAI-compatible servers differ in how they constrain an answer to JSON:

    json_schema   `response_format: {"type": "json_schema", ...}`, strict (OpenAI,
                  vLLM, recent Ollama, our embedded model)
    json_object   `{"type": "json_object", "schema": ...}` (llama-cpp-python's
                  server, which refuses json_schema; servers that ignore the
                  schema still get JSON, and the instructions below)
    prompt        no response_format: instructions and an example in the
                  system message, for servers that refuse both

Each upstream starts at `json_schema` (or at the mode `LLM_STRUCTURED_OUTPUT`
pins) and steps down when it refuses a mode, remembering the step for every
later request: the fallback costs one refused call per mode, once per process.
Whatever the mode, the answer is validated here, so no task sees JSON of the
wrong shape.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gptmini_graphql.errors import UpstreamError
from gptmini_graphql.llm.resilience import is_refusal
from gptmini_graphql.llm.upstream_errors import APIError, APIStatusError

logger = logging.getLogger("gptmini_graphql.llm")

Mode = Literal["json_schema", "json_object", "prompt"]
MODES: tuple[Mode, ...] = ("json_schema", "json_object", "prompt")

T = TypeVar("T", bound=BaseModel)

# What a refusal of a structured-output mode names (llama-cpp-python: "Input
# should be 'text' or 'json_object'" at response_format.type).
_FORMAT_WORDS = re.compile(
    r"response_format|json_schema|json_object|schema|structured|grammar", re.I
)
# A JSON object inside prose or a Markdown fence, as prompt-mode answers come.
_OBJECT = re.compile(r"\{.*\}", re.S)
MAX_PROBLEMS_SHOWN = 3


class StructuredOutput(Generic[T]):
    """One answer shape: a pydantic model (its JSON schema is what the
    upstream is asked for) and an example answer for models that get no schema."""

    def __init__(self, name: str, model: type[T], example: dict[str, Any]) -> None:
        self.name = name
        self.model = model
        self.schema = model.model_json_schema()
        self.example = json.dumps(model.model_validate(example).model_dump())
        self.strict_format = {
            "type": "json_schema",
            "json_schema": {"name": name, "strict": True, "schema": self.schema},
        }

    def parse(self, text: str) -> T:
        """The answer as the model's type, or UPSTREAM_ERROR saying what is wrong."""
        try:
            return self.model.model_validate_json(_json_part(text), strict=True)
        except ValidationError as exc:
            problems = "; ".join(
                _problem(error) for error in exc.errors()[:MAX_PROBLEMS_SHOWN]
            )
            raise UpstreamError(
                f"The model's answer does not match the {self.name} schema: "
                f"{_shorten(problems)}"
            ) from exc

    def body(self, body: dict[str, Any], mode: Mode) -> dict[str, Any]:
        """`body` (built for json_schema) as an upstream in `mode` takes it."""
        if mode == "json_schema":
            return body
        shaped = {key: value for key, value in body.items() if key != "response_format"}
        shaped["messages"] = self._with_instructions(body["messages"])
        if mode == "json_object":
            shaped["response_format"] = {"type": "json_object", "schema": self.schema}
        return shaped

    def _with_instructions(
        self, messages: list[dict[str, str]]
    ) -> list[dict[str, str]]:
        # An example, not the schema: a tenth of the tokens (translate's schema
        # lists every ISO 639-1 code), and small models follow it better.
        instructions = (
            f"Answer with one JSON object and nothing else, shaped like this "
            f"example: {self.example}"
        )
        first, *rest = messages
        if first["role"] == "system":
            return [{**first, "content": f"{first['content']} {instructions}"}, *rest]
        return [{"role": "system", "content": instructions}, *messages]


class FormatNegotiation:
    """Which structured-output mode one upstream takes, learnt from its refusals."""

    def __init__(self, upstream: str, pinned: Mode | None = None) -> None:
        self.upstream = upstream
        self.pinned = pinned is not None
        self.mode: Mode = pinned or MODES[0]

    def refused(self, mode: Mode, exc: APIStatusError) -> bool:
        """`mode` was refused with `exc`: True if another mode is worth a call."""
        if self.pinned or not _refuses_format(exc):
            return False
        if self.mode == mode:  # no concurrent request stepped down already
            following = MODES.index(mode) + 1
            if following == len(MODES):
                return False
            self.mode = MODES[following]
            logger.warning(
                "upstream refused a structured-output mode; using another from now on",
                extra={
                    "upstream": self.upstream,
                    "refused": mode,
                    "mode": self.mode,
                    "status": exc.status_code,
                },
            )
        return True


def _refuses_format(exc: APIError) -> bool:
    if not is_refusal(exc):
        return False
    body = exc.body if isinstance(exc.body, dict) else {}
    said = " ".join(str(body.get(key) or "") for key in ("message", "param", "detail"))
    return bool(_FORMAT_WORDS.search(said or exc.message))


def _json_part(text: str) -> str:
    """The text, or the object inside it when prose or a fence wraps it."""
    stripped = text.strip()
    if stripped.startswith("{") or (match := _OBJECT.search(stripped)) is None:
        return stripped
    return match.group(0)


def _problem(error: ErrorDetails) -> str:
    where = ".".join(map(str, error["loc"])) or "answer"
    if error["type"] == "literal_error":
        # Not pydantic's list of every allowed value (184 language codes).
        return f"{where}: {_shorten(repr(error['input']), 40)} is not an allowed value"
    return f"{where}: {error['msg']}"


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
