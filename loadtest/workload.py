"""What a simulated user sends: the four tasks in a realistic mix.

Plain Python (no Locust here): the tests run these very requests against the
schema. Texts come from small pools, popular ones far more often than the
rest, and one request in five carries a text never seen before: so repeats
are common and the response cache matters, as with real traffic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOGIN = """
mutation Login($username: String!, $password: String!) {
  login(username: $username, password: $password) { accessToken }
}
"""
SUMMARIZE = """
query Summarize($text: String!, $maxWords: Int!) {
  summarize(text: $text, maxWords: $maxWords) { text cached usage { totalTokens costUsd } }
}
"""
TRANSLATE = """
query Translate($text: String!, $to: String!) {
  translate(text: $text, targetLanguage: $to) { text sourceLanguage cached }
}
"""
ANALYZE = """
query Analyze($text: String!) {
  analyze(text: $text) { sentiment score confidence cached }
}
"""
COMPLETE = """
query Complete($prompt: String!, $maxTokens: Int!, $temperature: Float!) {
  complete(prompt: $prompt, maxTokens: $maxTokens, temperature: $temperature) {
    text finishReason cached
  }
}
"""

# Relative weights of the tasks in the mix.
WEIGHTS = {"summarize": 4, "translate": 3, "analyze": 3, "complete": 2}
# The share of requests whose text is new (a cache miss whatever it holds).
FRESH_SHARE = 0.2

ARTICLES = [
    "The city council approved a new transit plan on Tuesday. It adds night "
    "buses on six routes, extends the tram line to the university and is "
    "funded by a small levy on downtown parking. Construction starts in spring.",
    "Researchers reported that a common garden plant can remove small amounts "
    "of heavy metals from soil. The effect was measured over two growing "
    "seasons in test plots near a former factory site.",
    "The national weather service expects a warm, dry summer with a higher "
    "than usual risk of forest fires in the south. Farmers are advised to "
    "plan irrigation early and to watch local warnings.",
    "A regional airline will retire its oldest turboprop aircraft by the end "
    "of the year and replace them with quieter models that burn about a fifth "
    "less fuel per seat on short routes.",
    "The museum's new wing opens next month with an exhibition of textiles "
    "from three centuries, including pieces never shown in public before. "
    "Entry will be free on the first Sunday of every month.",
    "After two years of negotiations, the union and the employer agreed on a "
    "contract that raises wages by four percent a year and adds paid training "
    "days for all staff.",
]
REVIEWS = [
    "I love this phone: the battery lasts two days and the camera is great.",
    "The delivery was late and the box was damaged. Not happy at all.",
    "It works. Nothing special, nothing wrong with it either.",
    "Great food, but the service was painfully slow.",
    "Best customer support I have ever dealt with, they fixed it in minutes.",
    "The app crashes every time I open the settings page.",
    "Comfortable shoes, although they run a bit small.",
]
PHRASES = [
    "Good morning, how are you?",
    "See you tomorrow at the station.",
    "The meeting has been moved to Thursday afternoon.",
    "Thank you for your help with the move.",
    "Where is the nearest pharmacy?",
    "Please keep the door closed.",
]
LANGUAGES = ["fr", "de", "es", "it", "ja", "pt"]
PROMPTS = [
    "Write a haiku about the sea.",
    "Give three tips for a first job interview.",
    "Once upon a time, in a small village by the river,",
    "Explain what a GraphQL subscription is in one sentence.",
    "Suggest a name for a bakery that only sells bread.",
]


@dataclass(frozen=True)
class Request:
    """One GraphQL request of the mix; `field` is the root field it asks for."""

    field: str
    query: str
    variables: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"query": self.query, "variables": self.variables}


def pick(pool: list[str], rng: random.Random) -> str:
    """A popular text (the first ones of the pool most often), or now and
    then one never sent before."""
    if rng.random() < FRESH_SHARE:
        return f"{rng.choice(pool)} (ref {rng.randrange(10**9)})"
    return rng.choices(pool, weights=[1 / (rank + 1) for rank in range(len(pool))])[0]


def summarize(rng: random.Random) -> Request:
    words = rng.choice([30, 50, 100])
    return Request(
        "summarize", SUMMARIZE, {"text": pick(ARTICLES, rng), "maxWords": words}
    )


def translate(rng: random.Random) -> Request:
    to = rng.choices(LANGUAGES, weights=[6, 5, 4, 2, 1, 1])[0]
    return Request("translate", TRANSLATE, {"text": pick(PHRASES, rng), "to": to})


def analyze(rng: random.Random) -> Request:
    return Request("analyze", ANALYZE, {"text": pick(REVIEWS, rng)})


def complete(rng: random.Random) -> Request:
    # Half at temperature 0: deterministic, so cacheable; the rest vary.
    temperature = rng.choice([0.0, 0.7])
    return Request(
        "complete",
        COMPLETE,
        {"prompt": pick(PROMPTS, rng), "maxTokens": 64, "temperature": temperature},
    )


TASKS: dict[str, Callable[[random.Random], Request]] = {
    "summarize": summarize,
    "translate": translate,
    "analyze": analyze,
    "complete": complete,
}


def problem(request: Request, status: int, body: Any) -> str | None:
    """None for a good answer; else what went wrong, as a short code."""
    if status != 200:
        return f"HTTP {status}"
    if not isinstance(body, dict):
        return "NOT_JSON"
    if errors := body.get("errors"):
        return str(errors[0].get("extensions", {}).get("code", "ERROR"))
    if not (body.get("data") or {}).get(request.field):
        return "NO_DATA"
    return None
