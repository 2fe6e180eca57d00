"""What the model is given besides its weights: the chat template that turns
messages into a prompt, and the JSON grammars that constrain its answers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import llama_cpp
from llama_cpp.llama_chat_format import (
    ChatFormatter,
    ChatFormatterResponse,
    Jinja2ChatFormatter,
    format_chatml,
)
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar
from llama_cpp.llama_types import ChatCompletionRequestMessage

from gptmini_graphql.llm.local.chat import ChatRequest, InvalidRequestError

logger = logging.getLogger("gptmini_graphql.llm")


class ChatTemplate:
    """The chat template shipped in the GGUF, or ChatML for a file without one."""

    def __init__(self, llama: llama_cpp.Llama) -> None:
        self._formatter = _chat_formatter(llama)

    def format(self, messages: Sequence[Mapping[str, str]]) -> ChatFormatterResponse:
        try:
            # Validated by request_body.py into the roles llama_cpp's types list.
            chat = cast("list[ChatCompletionRequestMessage]", [*map(dict, messages)])
            return self._formatter(messages=chat)
        except Exception as exc:  # a chat template may raise anything it dislikes
            raise InvalidRequestError(
                f"The messages do not fit this model's chat template: {exc}"
            ) from exc


class Grammars:
    """JSON grammars compiled once per schema (compiling one takes a while)."""

    def __init__(self) -> None:
        self._compiled: dict[str, LlamaGrammar] = {}

    def warm_up(self, schemas: Iterable[Mapping[str, Any]]) -> None:
        for schema in schemas:
            self._grammar(schema)

    def for_request(self, request: ChatRequest) -> LlamaGrammar | None:
        if request.json_schema is not None:
            return self._grammar(request.json_schema)
        if request.json_object:
            return self._grammar(None)
        return None

    def _grammar(self, schema: Mapping[str, Any] | None) -> LlamaGrammar:
        key = json.dumps(schema, sort_keys=True)
        grammar = self._compiled.get(key)
        if grammar is None:
            try:
                grammar = (
                    LlamaGrammar.from_string(JSON_GBNF, verbose=False)
                    if schema is None
                    else LlamaGrammar.from_json_schema(key, verbose=False)
                )
            except Exception as exc:  # the converter raises bare Exceptions
                error = InvalidRequestError(
                    f"The response_format JSON schema is not supported: {exc}"
                )
                error.param = "response_format"
                raise error from exc
            self._compiled[key] = grammar
        return grammar


def _chat_formatter(llama: llama_cpp.Llama) -> ChatFormatter:
    template = llama.metadata.get("tokenizer.chat_template")
    if template is None:
        logger.warning("model file has no chat template; using ChatML")
        chatml: ChatFormatter = format_chatml  # registered by an untyped decorator
        return chatml
    eos = llama.token_eos()
    bos = llama.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=llama.detokenize([eos], special=True).decode() if eos != -1 else "",
        bos_token=llama.detokenize([bos], special=True).decode() if bos != -1 else "",
    )
