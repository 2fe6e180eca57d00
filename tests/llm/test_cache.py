"""The response cache, in memory and in a real Redis: hits, misses, what the
key covers, scope, single flight, bypass and refresh, and a broken Redis."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.auth.accounts import add_user
from tests.conftest import MEMORY_AND_REDIS, redis_url
from tests.fake_upstream import Reply, chat_completion

FIELDS = "text cached usage { costUsd savedCostUsd }"


@pytest.fixture(params=MEMORY_AND_REDIS)
def cached_api(request: pytest.FixtureRequest, make_api):
    def make(**overrides):
        store = redis_url() if request.param == "redis" else None
        return make_api(cache_ttl_seconds=60, redis_url=store, **overrides)

    return make


def _text() -> str:
    # Fresh per test: Redis keeps entries across tests and runs.
    return f"Some text {uuid.uuid4().hex}"


def _summarize(api, token, text, max_words=20, headers=None):
    query = f"query S($t: String!) {{ summarize(text: $t, maxWords: {max_words}) {{ {FIELDS} }} }}"
    return api.post(query, {"t": text}, token=token, headers=headers)["data"][
        "summarize"
    ]


def test_a_repeated_request_is_answered_from_the_cache(cached_api) -> None:
    api = cached_api()
    token, text = api.login(), _text()
    first = _summarize(api, token, text)
    second = _summarize(api, token, text)
    assert len(api.upstream.requests) == 1
    assert first["cached"] is False and first["usage"]["savedCostUsd"] == 0
    assert second["cached"] is True
    assert second["text"] == first["text"]
    assert second["usage"]["costUsd"] == 0
    assert second["usage"]["savedCostUsd"] == pytest.approx(first["usage"]["costUsd"])


def test_any_change_to_the_request_misses(cached_api) -> None:
    api = cached_api()
    token, text = api.login(), _text()
    _summarize(api, token, text)
    assert not _summarize(api, token, text + ".")["cached"]  # the messages
    assert not _summarize(api, token, text, max_words=21)[
        "cached"
    ]  # prompt, max tokens
    other_model = cached_api(openai_model="gpt-4.1-mini")
    assert not _summarize(other_model, other_model.login(), text)["cached"]
    assert _summarize(api, token, text)["cached"]  # and nothing else changed
    assert len(api.upstream.requests) == 4


def test_texts_beyond_ascii_hit_and_miss_by_their_every_character(
    cached_api,
) -> None:
    """The key is made from the request's own value (ResponseCache.key):
    the same text hits, a text that only looks the same misses."""
    api = cached_api()
    token, text = api.login(), _text()
    composed = text + ' caf\u00e9 "\u00bb\u6f22\u5b57\U0001f600\\n'
    decomposed = composed.replace("\u00e9", "e\u0301")
    assert not _summarize(api, token, composed)["cached"]
    assert _summarize(api, token, composed)["cached"]
    assert not _summarize(api, token, decomposed)["cached"]
    assert _summarize(api, token, decomposed)["cached"]
    assert len(api.upstream.requests) == 2


def test_a_request_hits_however_its_equal_texts_were_passed(cached_api) -> None:
    """The key is made from the request's value alone: one variable given
    twice (one text object in both messages) and two variables of the same
    text are one upstream request, so one entry."""
    api = cached_api()
    token, text = api.login(), _text()
    once = (
        "query C($p: String!) "
        "{ complete(prompt: $p, system: $p, temperature: 0) { cached } }"
    )
    twice = (
        "query C($p: String!, $s: String!) "
        "{ complete(prompt: $p, system: $s, temperature: 0) { cached } }"
    )
    first = api.post(once, {"p": text}, token=token)
    assert first["data"]["complete"]["cached"] is False
    second = api.post(twice, {"p": text, "s": text}, token=token)
    assert second["data"]["complete"]["cached"] is True
    assert len(api.upstream.requests) == 1


def test_only_deterministic_requests_are_cached(cached_api) -> None:
    api = cached_api()
    token, prompt = api.login(), _text()
    query = "query C($p: String!, $t: Float!) { complete(prompt: $p, temperature: $t) { cached } }"
    for temperature, expected in (
        (0.7, False),
        (0.7, False),
        (0.0, False),
        (0.0, True),
    ):
        result = api.post(query, {"p": prompt, "t": temperature}, token=token)
        assert result["data"]["complete"]["cached"] is expected
    assert len(api.upstream.requests) == 3


def _tokens_for(api, *users: str) -> list[str]:
    admin = api.login()
    return [add_user(api, admin, user) for user in users]


def test_entries_are_per_user_by_default(cached_api) -> None:
    api = cached_api()
    text = _text()
    alice, bob = _tokens_for(api, "alice", "bob")
    _summarize(api, alice, text)
    assert not _summarize(api, bob, text)["cached"]
    assert _summarize(api, bob, text)["cached"]


def test_a_shared_scope_serves_every_user(cached_api) -> None:
    api = cached_api(cache_scope="shared")
    text = _text()
    alice, bob = _tokens_for(api, "alice", "bob")
    _summarize(api, alice, text)
    assert _summarize(api, bob, text)["cached"]


def test_identical_concurrent_requests_make_one_upstream_call(cached_api) -> None:
    api = cached_api()
    token, text = api.login(), _text()
    api.upstream.default = lambda body: Reply(delay=0.3, body=chat_completion("Once."))
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: _summarize(api, token, text), range(6)))
    assert len(api.upstream.requests) == 1
    assert {result["text"] for result in results} == {"Once."}
    assert sorted(result["cached"] for result in results) == [False] + [True] * 5


def test_no_store_bypasses_and_no_cache_refreshes(cached_api) -> None:
    api = cached_api()
    token, text = api.login(), _text()
    bypass = {"Cache-Control": "no-store"}
    assert not _summarize(api, token, text, headers=bypass)["cached"]
    assert not _summarize(api, token, text, headers=bypass)["cached"]
    assert not _summarize(api, token, text)["cached"]  # the bypasses stored nothing
    api.upstream.queue(Reply(body=chat_completion("A newer answer.")))
    refreshed = _summarize(api, token, text, headers={"Cache-Control": "no-cache"})
    assert refreshed == {**refreshed, "cached": False, "text": "A newer answer."}
    assert _summarize(api, token, text)["text"] == "A newer answer."  # kept
    assert len(api.upstream.requests) == 4


def test_a_broken_redis_steps_aside(capfd, make_api) -> None:
    # Nothing listens on port 1: every cache call fails at once.
    api = make_api(cache_ttl_seconds=60, redis_url="redis://127.0.0.1:1/0")
    token, text = api.login(), _text()
    assert _summarize(api, token, text)["text"] == "A short answer."
    assert not _summarize(api, token, text)["cached"]
    # Paused after the first failure: one warning, not one per request.
    assert capfd.readouterr().err.count("redis unreachable") == 1


def test_a_zero_ttl_turns_the_cache_off(make_api) -> None:
    api = make_api(cache_ttl_seconds=0)
    token, text = api.login(), _text()
    _summarize(api, token, text)
    assert not _summarize(api, token, text)["cached"]
