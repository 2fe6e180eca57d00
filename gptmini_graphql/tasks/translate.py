"""translate: the text in another language, detecting the source when not given.

The translation is plain text (small models garble it inside JSON); the
detection, when needed, is a second small call whose answer a JSON schema
holds to the ISO 639-1 codes. Both run at once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from gptmini_graphql.llm.answers import ChatAnswer
from gptmini_graphql.llm.caller import CallerLLM
from gptmini_graphql.llm.structured import StructuredOutput
from gptmini_graphql.tasks.base import both, delimited, require_text, without_envelope
from gptmini_graphql.tasks.languages import CODES, resolve_language
from gptmini_graphql.tasks.results import Translation, Usage

SYSTEM = (
    "Translate the text the user gives between <text> tags {source}into "
    "{target}. Keep its meaning, tone and formatting. Reply with the {target} "
    "translation only: no notes, no quotes, no tags."
)
# The instruction again, after the text: SmolLM2-135M wrote in the target
# language 76% of the time with it, 51% without (it echoed the text or
# stayed in the text's language).
ASK = "\nTranslate the text above into {target}."
DETECT_SYSTEM = (
    "Name the language of the text the user gives between <text> tags, as an "
    "ISO 639-1 code. Answer with JSON only."
)


class LanguageAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # ISO 639-1. A Literal of the codes, built at run time, so the schema the
    # model is asked for lists them; the type checker cannot read it: a str.
    if TYPE_CHECKING:
        language: str
    else:
        language: Literal[tuple(CODES)]


LANGUAGE = StructuredOutput("language", LanguageAnswer, example={"language": "fr"})
DETECT_MAX_TOKENS = 16

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


async def translate(
    llm: CallerLLM, text: str, target_language: str, source_language: str | None = None
) -> Translation:
    require_text(text, "text", llm.settings.max_input_chars)
    target = resolve_language(target_language, "targetLanguage")
    source = (
        resolve_language(source_language, "sourceLanguage") if source_language else None
    )
    translating = llm.chat(
        [
            {
                "role": "system",
                "content": SYSTEM.format(
                    source=f"from {source.name} " if source else "", target=target.name
                ),
            },
            {
                "role": "user",
                "content": delimited(text) + ASK.format(target=target.name),
            },
        ],
        max_tokens=translation_tokens(
            text, target.code, llm.settings.max_completion_tokens
        ),
        temperature=0,
        stop=_stops(text) or None,
    )
    if source is None:
        answer, detection = await both(translating, _detect(llm, text))
        detected = _detected_code(detection)
        usage = answer.usage + detection.usage
        cached = answer.cached and detection.cached
    else:
        answer = await translating
        detected, usage, cached = source.code, answer.usage, answer.cached
    return Translation(
        text=_only_the_translation(answer.text, text),
        source_language=detected,
        target_language=target.code,
        model=answer.model,
        usage=Usage.of(usage),
        cached=cached,
    )


# Tokens a translation into these languages takes per character of its
# source, where bytes / 3 falls short: small models' tokenizers split their
# scripts finely. Measured on one English sentence and its translations,
# SmolLM2's tokenizer (the finer of the two we ship) took per English
# character: Cyrillic 0.8, Arabic and Hebrew 0.8-0.9, Chinese, Japanese and
# Korean 0.5-0.9, Greek and Devanagari 1.1, Thai 1.5; Latin scripts 0.2-0.4.
# These factors leave about a third more.
_SCRIPT_TIERS = (
    # Cyrillic; Arabic and Hebrew scripts; Chinese, Japanese, Korean
    (1.2, "ru uk be bg mk sr kk ky tg mn tt ba cv ce os kv av"),
    (1.2, "ar fa ur ps ug sd ks he yi zh ja ko"),
    # Greek, Armenian, Georgian, Ethiopic, Thaana, the Brahmic scripts of India
    (1.5, "el hy ka am ti dv hi mr ne sa bn as pa gu or ta te kn ml si"),
    # Thai, Lao, Khmer, Burmese, Tibetan
    (2.0, "th lo km my bo dz"),
)
_TOKENS_PER_SOURCE_CHAR = {
    code: factor for factor, codes in _SCRIPT_TIERS for code in codes.split()
}


def translation_tokens(text: str, target: str, ceiling: int) -> int:
    """The room a translation into `target` (ISO 639-1) needs: about its
    text's own length in tokens, more for a script tokenizers split finely.

    UTF-8 bytes / 3 overestimates the tokens of a text in most scripts
    (English runs about 4.5 bytes a token, Chinese and Japanese about 3),
    which leaves room for a Latin-script target that needs more. Reserving
    only this much keeps a context-length refusal about the user's text, not
    about a ceiling of ours, and bounds what a loop can cost.
    """
    by_script = len(text) * _TOKENS_PER_SOURCE_CHAR.get(target, 0.0)
    return min(max(len(text.encode()) // 3, round(by_script)) + 64, ceiling)


async def _detect(llm: CallerLLM, text: str) -> ChatAnswer:
    return await llm.chat(
        [
            {"role": "system", "content": DETECT_SYSTEM},
            # The start of a text names its language as well as the whole of it.
            {"role": "user", "content": delimited(text[:500])},
        ],
        max_tokens=DETECT_MAX_TOKENS,
        temperature=0,
        output=LANGUAGE,
    )


def _detected_code(detection: ChatAnswer) -> str:
    return LANGUAGE.parse(detection.text).language


def _stops(text: str) -> list[str]:
    """Where a translation is over: small models go on to echo the envelope,
    or add notes after a blank line to a text that had none. (An answer that
    opens with the tag is not stopped: the tag is stripped from it.)"""
    stops = [] if "text>" in text else ["\n<text>", "</text>"]
    if not _PARAGRAPH_BREAK.search(text.strip()):
        stops.append("\n\n")
    return stops


def _only_the_translation(answer: str, text: str) -> str:
    """Small models echo the tags and append notes in paragraphs of their own:
    keep as many paragraphs as the text had."""
    paragraphs = _PARAGRAPH_BREAK.split(without_envelope(answer))
    wanted = len(_PARAGRAPH_BREAK.split(text.strip()))
    return "\n\n".join(paragraphs[:wanted]).strip()
