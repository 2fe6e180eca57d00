"""The Chat Completions request body, as the embedded model's server reads
it: the slice of the protocol our tasks use, validated, then turned into a
`ChatRequest` for the engine. Fields we do not use are ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gptmini_graphql.llm.local.chat import ChatRequest


class _Body(BaseModel):
    # Fields of the protocol we do not use (user, metadata, ...) are ignored.
    model_config = ConfigDict(extra="ignore")


class _TextPart(_Body):
    type: Literal["text"]
    text: str


class _Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart]

    def for_template(self) -> dict[str, str]:
        # Chat templates know "system"; "developer" is OpenAI's newer name for it.
        role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, str):
            return {"role": role, "content": self.content}
        return {"role": role, "content": "".join(p.text for p in self.content)}


class _JsonSchema(_Body):
    name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class _ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> _ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        return self


class _StreamOptions(_Body):
    include_usage: bool = False


class ChatCompletionBody(_Body):
    model: str | None = None  # any name is accepted; the answer names our model
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    n: Literal[1] | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    response_format: _ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def to_chat_request(self) -> ChatRequest:
        fmt = self.response_format
        return ChatRequest(
            messages=[m.for_template() for m in self.messages],
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=self.top_p or 1.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            stop=[self.stop] if isinstance(self.stop, str) else self.stop or [],
            seed=self.seed,
            json_schema=(
                fmt.json_schema.schema_
                if fmt is not None and fmt.json_schema is not None
                else None
            ),
            json_object=fmt is not None and fmt.type == "json_object",
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
        )
