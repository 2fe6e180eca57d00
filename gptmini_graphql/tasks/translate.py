"""translate: the text in another language, detecting the source when not given."""

from __future__ import annotations

from gptmini_graphql.errors import UpstreamError
from gptmini_graphql.llm.client import LLM
from gptmini_graphql.tasks.base import (
    delimited,
    json_schema_format,
    parse_json_object,
    require_text,
)
from gptmini_graphql.tasks.languages import BY_CODE, CODES, resolve_language
from gptmini_graphql.tasks.results import Translation, answer_fields

SYSTEM = (
    "You are a translator. Translate the text the user gives between <text> tags "
    "{source}into {target}. Keep its meaning, tone and formatting. Answer with "
    "JSON only{detect}."
)
DETECT = (
    ', with "source_language" set to the ISO 639-1 code of the language the '
    "text is written in"
)

# Detection and translation in one call; the enum keeps the code valid.
DETECTING_SCHEMA = json_schema_format(
    "translation",
    {
        "type": "object",
        "properties": {
            "source_language": {"type": "string", "enum": CODES},
            "translation": {"type": "string"},
        },
        "required": ["source_language", "translation"],
        "additionalProperties": False,
    },
)
KNOWN_SOURCE_SCHEMA = json_schema_format(
    "translation",
    {
        "type": "object",
        "properties": {"translation": {"type": "string"}},
        "required": ["translation"],
        "additionalProperties": False,
    },
)


async def translate(
    llm: LLM, text: str, target_language: str, source_language: str | None = None
) -> Translation:
    require_text(text, "text", llm.settings.max_input_chars)
    target = resolve_language(target_language, "targetLanguage")
    source = (
        resolve_language(source_language, "sourceLanguage") if source_language else None
    )
    system = SYSTEM.format(
        source=f"from {source.name} " if source else "",
        target=target.name,
        detect="" if source else DETECT,
    )
    answer = await llm.chat(
        [
            {"role": "system", "content": system},
            {"role": "user", "content": delimited(text)},
        ],
        # Translations run longer than their source in tokens; leave room.
        max_tokens=llm.settings.max_completion_tokens,
        temperature=0,
        response_format=KNOWN_SOURCE_SCHEMA if source else DETECTING_SCHEMA,
    )
    fields = parse_json_object(answer.text)
    translation = fields.get("translation")
    detected = source.code if source else fields.get("source_language")
    if not isinstance(translation, str) or detected not in BY_CODE:
        raise UpstreamError("The model's translation did not match the expected shape.")
    return Translation(
        text=translation.strip(),
        source_language=detected,
        target_language=target.code,
        **answer_fields(answer),
    )
