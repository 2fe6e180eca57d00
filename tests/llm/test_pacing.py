"""ReplyTurns (llm/pacing.py): answers that land together go on one per pass
of the event loop while it idles, all at once while it is busy.

A pass is counted by a callback that schedules itself again: it runs once
in every pass of the loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from gptmini_graphql.llm.building import build_llm
from gptmini_graphql.llm.pacing import ReplyTurns
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.tracing import Tracing
from tests.conftest import make_settings
from tests.fake_upstream import FakeUpstream

IDLE = ReplyTurns  # a fresh loop has idled: it paces
NEVER_IDLE = lambda: ReplyTurns(busy_above=0.0)  # noqa: E731


def pass_counter(loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
    passes = 0

    def tick() -> None:
        nonlocal passes
        passes += 1
        loop.call_soon(tick)

    loop.call_soon(tick)
    return lambda: passes


async def answers_landing_together(
    turns: ReplyTurns, count: int, *, cancel: int | None = None
) -> list[tuple[int, int]]:
    """(answer, pass it went on in) for `count` answers that all take a turn
    in one pass; `cancel`: that answer's request is cancelled while held."""
    loop = asyncio.get_running_loop()
    passes = pass_counter(loop)
    went: list[tuple[int, int]] = []
    landed = loop.create_future()

    async def answer(n: int) -> None:
        await landed  # all wake in one pass, as answers read in one poll do
        await turns.take()
        went.append((n, passes()))

    tasks = [asyncio.create_task(answer(n)) for n in range(count)]
    await asyncio.sleep(0)  # every task waits on `landed`
    landed.set_result(None)
    if cancel is not None:
        await asyncio.sleep(0)  # now all have taken a turn, or are held
        tasks[cancel].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return went


def one_per_pass(went: list[tuple[int, int]]) -> bool:
    return all(b > a for (_, a), (_, b) in itertools.pairwise(went))


def test_a_burst_on_an_idle_loop_goes_on_one_answer_per_pass_in_order() -> None:
    went = asyncio.run(answers_landing_together(IDLE(), 5))
    assert [n for n, _ in went] == [0, 1, 2, 3, 4]
    assert one_per_pass(went)


def test_a_burst_on_a_busy_loop_goes_on_at_once() -> None:
    went = asyncio.run(answers_landing_together(NEVER_IDLE(), 5))
    assert [n for n, _ in went] == [0, 1, 2, 3, 4]
    assert len({at for _, at in went}) == 1


def test_a_lone_answer_is_never_held() -> None:
    async def lone_answers() -> list[int]:
        turns, went = IDLE(), []
        passes = pass_counter(asyncio.get_running_loop())
        for _ in range(3):
            before = passes()
            await turns.take()
            went.append(passes() - before)
            await asyncio.sleep(0.01)  # the next one comes later
        return went

    assert asyncio.run(lone_answers()) == [0, 0, 0]


def test_a_cancelled_held_answer_gives_up_its_turn() -> None:
    went = asyncio.run(answers_landing_together(IDLE(), 4, cancel=1))
    assert [n for n, _ in went] == [0, 2, 3]
    assert one_per_pass(went)


def test_held_answers_all_go_on_once_the_loop_is_busy() -> None:
    async def scenario() -> list[tuple[int, int]]:
        turns = ReplyTurns(window=0.0)  # the load is read at every pass
        went = asyncio.create_task(answers_landing_together(turns, 6))
        for _ in range(3):  # the burst lands: one goes on, five are held
            await asyncio.sleep(0)
        assert len(turns._held) == 5
        turns.busy_above = 0.0  # from now on the loop reads as busy
        return await went

    went = asyncio.run(scenario())
    assert [n for n, _ in went] == [0, 1, 2, 3, 4, 5]
    assert len({at for _, at in went[2:]}) == 1  # the rest held: one pass


def test_one_instance_serves_a_later_event_loop() -> None:
    turns = IDLE()

    async def leave_answers_held() -> None:
        loop = asyncio.get_running_loop()
        landed = loop.create_future()
        tasks = []

        async def answer() -> None:
            await landed
            await turns.take()

        for _ in range(3):
            tasks.append(asyncio.create_task(answer()))
        await asyncio.sleep(0)
        landed.set_result(None)
        await asyncio.sleep(0)  # one went on, two are held
        assert len(turns._held) == 2

    # The first loop stops and is closed with answers still held, and its
    # next pass never comes (asyncio.run would have cancelled them first).
    first = asyncio.new_event_loop()
    first.run_until_complete(leave_answers_held())
    first.close()

    async def bounded() -> list[tuple[int, int]]:
        return await asyncio.wait_for(answers_landing_together(turns, 3), 5)

    went = asyncio.run(bounded())  # a leftover of the first loop would hang it
    assert [n for n, _ in went] == [0, 1, 2]
    assert one_per_pass(went)


class _HeldForever(ReplyTurns):
    def __init__(self) -> None:
        super().__init__()
        self.holding = asyncio.Event()

    async def take(self) -> None:
        self.holding.set()
        await asyncio.get_running_loop().create_future()


class _Meter:
    """What LLM.chat tells a meter: a hold for every reserve, then settles."""

    def __init__(self) -> None:
        self.settled: list[dict] = []

    async def reserve(self, body: dict, price: object) -> object:
        return object()

    async def settle(self, hold: object, **charged: object) -> None:
        self.settled.append(charged)


def test_a_request_that_leaves_while_its_answer_is_held_pays_the_answers_usage(
    upstream: FakeUpstream,
) -> None:
    async def scenario() -> list[dict]:
        llm = build_llm(
            make_settings(),
            upstream.http_client(),
            metrics=Metrics(),
            tracing=Tracing(),
        )
        llm.turns = turns = _HeldForever()
        meter = _Meter()
        chat = asyncio.create_task(
            llm.chat(
                [{"role": "user", "content": "hi"}],
                max_tokens=10,
                temperature=0,
                meter=meter,  # type: ignore[arg-type]
            )
        )
        await turns.holding.wait()  # answered, and held
        chat.cancel()
        with pytest.raises(asyncio.CancelledError):
            await chat
        await llm.aclose()
        return meter.settled

    [charged] = asyncio.run(scenario())
    assert charged["outcome"] == "CANCELLED"
    assert charged["usage"] is not None  # the answer's own, not the worst case
