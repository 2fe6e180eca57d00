"""analyze: the sentiment of a text as a label, a score and a confidence.

The model names only the label, held to the four values; `confidence` is the
probability it gave that label, and `score` the probability of positive
minus that of negative, both from the token where the label begins (see
`choice`). No digits the model writes itself: a small one wrote 0.9 every time.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gptmini_graphql.llm.caller import CallerLLM
from gptmini_graphql.llm.structured import StructuredOutput
from gptmini_graphql.tasks.base import delimited, require_text
from gptmini_graphql.tasks.choice import label_shares
from gptmini_graphql.tasks.results import Sentiment, SentimentAnalysis, answer_fields

# Short and plain: on our set, SmolLM2-135M did no better with definitions
# of the labels.
SYSTEM = (
    "Classify the sentiment of the text the user gives between <text> tags: "
    "positive, negative, neutral (no feeling) or mixed (praise and complaint). "
    "Answer with JSON only."
)
LABELS = [s.value for s in Sentiment]
# Three worked answers, as earlier turns of the chat, took SmolLM2-135M from
# 48% to 82% right on our set: alone, it called nearly every neutral text
# positive. Their order matters to a model that small: with the positive
# example last it answered positive to everything. A large model reads them
# as the format they are; no mixed example, which made small models say it.
EXAMPLES = (
    ("The hotel staff were kind and the room was spotless.", "positive"),
    ("The package arrived broken and nobody answers my emails.", "negative"),
    ("The meeting is on Thursday at ten in room 4.", "neutral"),
)


class SentimentAnswer(BaseModel):
    """What the model must answer (its JSON schema is what the upstream gets)."""

    model_config = ConfigDict(extra="forbid")

    sentiment: Literal["positive", "negative", "neutral", "mixed"]


SENTIMENT = StructuredOutput(
    "sentiment", SentimentAnswer, example={"sentiment": "positive"}
)
MAX_TOKENS = 16
TOP_LOGPROBS = 20  # OpenAI's most


async def analyze(llm: CallerLLM, text: str) -> SentimentAnalysis:
    require_text(text, "text", llm.settings.max_input_chars)
    answer = await llm.chat(
        [
            {"role": "system", "content": SYSTEM},
            *_worked_examples(),
            {"role": "user", "content": delimited(text)},
        ],
        max_tokens=MAX_TOKENS,
        temperature=0,
        output=SENTIMENT,
        top_logprobs=TOP_LOGPROBS,
    )
    sentiment = Sentiment(SENTIMENT.parse(answer.text).sentiment)
    shares = label_shares(answer.text, "sentiment", LABELS, answer.logprobs)
    confidence: float | None
    if shares is None:
        # Without logprobs from the model server nothing says how sure it
        # was: null, not a number that would look measured.
        confidence = None
        score = {Sentiment.POSITIVE: 0.5, Sentiment.NEGATIVE: -0.5}.get(sentiment, 0.0)
    else:
        confidence = shares[sentiment.value]
        score = shares["positive"] - shares["negative"]
    # The label is the answer; a score leaning the other way would contradict it.
    if sentiment is Sentiment.POSITIVE:
        score = abs(score)
    elif sentiment is Sentiment.NEGATIVE:
        score = -abs(score)
    return SentimentAnalysis(
        sentiment=sentiment,
        score=round(score, 4),
        confidence=None if confidence is None else round(confidence, 4),
        **answer_fields(answer),
    )


def _worked_examples() -> list[dict[str, str]]:
    turns = []
    for example, label in EXAMPLES:
        turns.append({"role": "user", "content": delimited(example)})
        # As the model writes its answers: json.dumps's spacing.
        answer = json.dumps({"sentiment": label})
        turns.append({"role": "assistant", "content": answer})
    return turns
