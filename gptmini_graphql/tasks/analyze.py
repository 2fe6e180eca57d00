"""analyze: the sentiment of a text as a label, a score and a confidence."""

from __future__ import annotations

from gptmini_graphql.errors import UpstreamError
from gptmini_graphql.llm.client import CallerLLM
from gptmini_graphql.tasks.base import (
    delimited,
    json_schema_format,
    parse_json_object,
    require_text,
)
from gptmini_graphql.tasks.results import Sentiment, SentimentAnalysis, answer_fields

SYSTEM = (
    "You classify the sentiment of the text the user gives between <text> tags: "
    "positive, negative, neutral or mixed, with a score from -1 (most negative) "
    "to 1 (most positive) and a confidence from 0 to 1. Examples: 'I love it' is "
    "positive, score 0.9; 'This is awful' is negative, score -0.9; 'It is "
    "Monday' is neutral, score 0; 'Good food, bad service' is mixed, score 0. "
    "Answer with JSON only."
)

SCHEMA = json_schema_format(
    "sentiment",
    {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": [s.value for s in Sentiment]},
            "score": {"type": "number"},
            "confidence": {"type": "number"},
        },
        "required": ["sentiment", "score", "confidence"],
        "additionalProperties": False,
    },
)
MAX_TOKENS = 64


async def analyze(llm: CallerLLM, text: str) -> SentimentAnalysis:
    require_text(text, "text", llm.settings.max_input_chars)
    answer = await llm.chat(
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": delimited(text)},
        ],
        max_tokens=MAX_TOKENS,
        temperature=0,
        response_format=SCHEMA,
    )
    fields = parse_json_object(answer.text)
    try:
        sentiment = Sentiment(fields["sentiment"])
        score = float(fields["score"])
        confidence = float(fields["confidence"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UpstreamError(
            "The model's sentiment did not match the expected shape."
        ) from exc
    score = _clamp(score, -1.0, 1.0)
    # Small models get the label right more often than the sign: make them agree.
    if sentiment is Sentiment.POSITIVE:
        score = abs(score)
    elif sentiment is Sentiment.NEGATIVE:
        score = -abs(score)
    return SentimentAnalysis(
        sentiment=sentiment,
        # Strict schemas can't bound numbers everywhere; the ranges are ours to keep.
        score=score,
        confidence=_clamp(confidence, 0.0, 1.0),
        **answer_fields(answer),
    )


def _clamp(value: float, low: float, high: float) -> float:
    if value != value:  # NaN
        raise UpstreamError("The model's sentiment score is not a number.")
    return min(max(value, low), high)
