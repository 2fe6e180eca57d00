"""analyze: the sentiment of a text as a label, a score and a confidence."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from gptmini_graphql.llm.client import CallerLLM
from gptmini_graphql.llm.structured import StructuredOutput
from gptmini_graphql.tasks.base import delimited, require_text
from gptmini_graphql.tasks.results import Sentiment, SentimentAnalysis, answer_fields

SYSTEM = (
    "You classify the sentiment of the text the user gives between <text> tags: "
    "positive, negative, neutral or mixed, with a score from -1 (most negative) "
    "to 1 (most positive) and a confidence from 0 to 1. Examples: 'I love it' is "
    "positive, score 0.9; 'This is awful' is negative, score -0.9; 'It is "
    "Monday' is neutral, score 0; 'Good food, bad service' is mixed, score 0. "
    "Answer with JSON only."
)


class SentimentAnswer(BaseModel):
    """What the model must answer (its JSON schema is what the upstream gets)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sentiment: Literal["positive", "negative", "neutral", "mixed"]
    score: float
    confidence: float


SENTIMENT = StructuredOutput(
    "sentiment",
    SentimentAnswer,
    example={"sentiment": "positive", "score": 0.9, "confidence": 0.8},
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
        output=SENTIMENT,
    )
    fields = SENTIMENT.parse(answer.text)
    sentiment = Sentiment(fields.sentiment)
    score = _clamp(fields.score, -1.0, 1.0)
    # Small models get the label right more often than the sign: make them agree.
    if sentiment is Sentiment.POSITIVE:
        score = abs(score)
    elif sentiment is Sentiment.NEGATIVE:
        score = -abs(score)
    return SentimentAnalysis(
        sentiment=sentiment,
        # Strict schemas can't bound numbers everywhere; the ranges are ours to keep.
        score=score,
        confidence=_clamp(fields.confidence, 0.0, 1.0),
        **answer_fields(answer),
    )


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
