"""The embedded local model: llama.cpp behind one worker thread and a bounded queue.

A llama.cpp context is not thread-safe, so everything that touches it
(templating, tokenizing, sampling) runs on a single worker thread, one request
at a time. Requests beyond the one generating wait in a queue of `queue_size`; past that
they are refused at once with `QueueFullError`, so the server can answer 429
instead of piling up latency.

The awaiting coroutine and the worker share a `threading.Event`: when the
coroutine goes away (client disconnect, timeout, cancellation) the worker
stops between two tokens and frees the slot.

    async with model.generate(ChatRequest(messages=[...])) as generation:
        async for text in generation:
            ...
    generation.finish_reason, generation.usage
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import llama_cpp
import numpy as np
from llama_cpp.llama_chat_format import (
    ChatFormatter,
    ChatFormatterResponse,
    Jinja2ChatFormatter,
    format_chatml,
)
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from gptmini_graphql.llm.local.model_file import check_model_file

logger = logging.getLogger("gptmini_graphql.llm")

FinishReason = Literal["stop", "length"]

# Sampling knobs the Chat Completions protocol does not expose; these are
# llama.cpp's usual defaults and keep a small model from wandering.
_TOP_K = 40
_MIN_P = 0.05


class LocalModelError(Exception):
    """Base of the errors the embedded model raises on purpose."""


class QueueFullError(LocalModelError):
    """Every slot is taken: one request is generating and the queue is full."""

    def __init__(self, in_flight: int, retry_after: int) -> None:
        super().__init__(
            f"The local model is busy ({in_flight} generating or waiting for "
            f"it). Retry in about {retry_after} s."
        )
        self.retry_after = retry_after


class ModelUnavailableError(LocalModelError):
    """The model is shutting down (the server answers 503)."""


class InvalidRequestError(LocalModelError):
    """The request cannot be served as given (the server answers 400)."""

    code: str | None = None
    param: str | None = None


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"
    param = "messages"

    def __init__(self, prompt_tokens: int, limit: int) -> None:
        super().__init__(
            f"This model's maximum context length limit is {limit} tokens, "
            f"but the messages came to {prompt_tokens} tokens. Shorten the "
            "messages and leave room for the answer."
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One chat completion, already validated by the caller."""

    messages: Sequence[Mapping[str, str]]
    max_tokens: int | None = None  # None: as many as the context leaves room for
    temperature: float = 1.0
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: Sequence[str] = ()
    seed: int | None = None
    json_schema: Mapping[str, Any] | None = None  # constrain the answer to it
    json_object: bool = False  # constrain the answer to some JSON value
    # Per generated token: its log probability and the `top_logprobs` likeliest
    # tokens at that step, before the JSON grammar narrows the choice.
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as OpenAI's `logprobs.content` lists it."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class _Started:
    prompt_tokens: int


@dataclass(frozen=True)
class _Finished:
    finish_reason: FinishReason
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass
class _Job:
    """What the worker thread and the awaiting coroutine share."""

    request: ChatRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[str | _Started | _Finished | BaseException] = field(
        default_factory=asyncio.Queue
    )
    cancelled: threading.Event = field(default_factory=threading.Event)

    def post(self, event: str | _Started | _Finished | BaseException) -> None:
        """Hand an event to the awaiting coroutine (called on the worker)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()


class Generation:
    """A running completion: iterate it for text pieces, then read the outcome."""

    def __init__(self, job: _Job, prompt_tokens: int) -> None:
        self._job = job
        self.prompt_tokens = prompt_tokens
        self.finish_reason: FinishReason | None = None
        self.completion_tokens = 0
        self.logprobs: tuple[TokenLogprob, ...] | None = None

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> str:
        if self.finish_reason is not None:
            raise StopAsyncIteration
        event = await self._job.events.get()
        if isinstance(event, str):
            return event
        if isinstance(event, _Finished):
            self.finish_reason = event.finish_reason
            self.completion_tokens = event.completion_tokens
            self.logprobs = event.logprobs
            raise StopAsyncIteration
        assert isinstance(event, BaseException)
        raise event


class LocalModel:
    """A loaded GGUF model serving chat completions one at a time."""

    def __init__(
        self, llama: llama_cpp.Llama, *, queue_size: int, repeat_penalty: float = 1.0
    ) -> None:
        self._llama = llama
        self._repeat_penalty = repeat_penalty
        self._formatter = _chat_formatter(llama)
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._grammars: dict[str, LlamaGrammar] = {}
        self._capacity = 1 + queue_size
        self._in_flight = 0
        # Seconds one request holds the model, averaged over recent ones: what
        # a refused client is told to wait is the queue ahead of it times this.
        self._seconds_per_request = _ExpMovingAverage(initial=1.0)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        context_size: int,
        threads: int,
        queue_size: int,
        repeat_penalty: float = 1.0,
    ) -> LocalModel:
        """Load a GGUF file (blocking: call it off the event loop)."""
        check_model_file(path)
        started = time.perf_counter()
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context_size,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        load_ms = round((time.perf_counter() - started) * 1000)
        logger.info(
            "local model loaded",
            extra={
                "model_path": str(path),
                "size_bytes": path.stat().st_size,
                "context_length": llama.n_ctx(),
                "threads": threads,
                "load_ms": load_ms,
            },
        )
        return cls(llama, queue_size=queue_size, repeat_penalty=repeat_penalty)

    @property
    def context_size(self) -> int:
        return self._llama.n_ctx()

    @property
    def capacity(self) -> int:
        """Requests admitted at once: the one generating plus the queue."""
        return self._capacity

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished (generating or waiting)."""
        return self._in_flight

    def queue_wait_seconds(self) -> int:
        """About how long until a slot frees if every request ahead runs."""
        wait = self._in_flight * self._seconds_per_request.value
        return max(1, math.ceil(wait))

    def warm_up(self, schemas: Iterable[Mapping[str, Any]]) -> None:
        """Compile these JSON-schema grammars now, not on a user's request."""
        for schema in schemas:
            self._grammar(schema)

    @asynccontextmanager
    async def generate(self, request: ChatRequest) -> AsyncIterator[Generation]:
        """Start a completion; leaving the block stops it if it is still running.

        Raises `QueueFullError` at once when no slot is free, and
        `InvalidRequestError` (before yielding) when the prompt does not fit or
        the schema cannot be compiled.
        """
        with self._lock:
            if self._in_flight >= self._capacity:
                raise QueueFullError(self._in_flight, self.queue_wait_seconds())
            self._in_flight += 1
        job = _Job(request, asyncio.get_running_loop())
        try:
            self._worker.submit(self._run, job)
        except RuntimeError:  # shut down
            self._release()
            raise
        try:
            first = await job.events.get()
            if isinstance(first, BaseException):
                raise first
            assert isinstance(first, _Started)
            yield Generation(job, first.prompt_tokens)
        finally:
            # After a normal finish this is a no-op; otherwise the worker
            # stops at the next token boundary and frees the slot.
            job.cancelled.set()

    async def complete(self, request: ChatRequest) -> Completion:
        async with self.generate(request) as generation:
            text = "".join([piece async for piece in generation])
        assert generation.finish_reason is not None
        return Completion(
            text, generation.finish_reason, generation.usage, generation.logprobs
        )

    def close(self) -> None:
        """Stop what runs, fail what waits, free the model."""
        self._closing.set()
        self._worker.shutdown(wait=True)
        self._llama.close()

    # --- on the worker thread -------------------------------------------

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _run(self, job: _Job) -> None:
        outcome: _Finished | BaseException | None = None
        started = time.monotonic()
        try:
            if job.cancelled.is_set():
                outcome = None
            elif self._closing.is_set():
                outcome = ModelUnavailableError("The local model is shutting down.")
            else:
                outcome = self._generate(job)
        except LocalModelError as exc:
            outcome = exc
        except Exception as exc:
            logger.exception("local model generation failed")
            outcome = exc
        finally:
            if isinstance(outcome, _Finished):
                self._seconds_per_request.add(time.monotonic() - started)
            # Free the slot before the last event, so that a client that sees
            # its answer complete can send the next request and be admitted.
            self._release()
        if outcome is not None:
            job.post(outcome)

    def _generate(self, job: _Job) -> _Finished | None:
        request = job.request
        formatted = self._format(request.messages)
        prompt = self._llama.tokenize(
            formatted.prompt.encode("utf-8"),
            add_bos=not formatted.added_special,
            special=True,
        )
        room = self.context_size - len(prompt)
        if room <= 0:
            raise ContextLengthExceededError(len(prompt), self.context_size)
        grammar = self._grammar_for(request)
        job.post(_Started(len(prompt)))

        max_tokens = min(request.max_tokens or room, room)
        stops = [*request.stop, *_as_list(formatted.stop)]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held = ""  # decoded text not sent yet: it may be the start of a stop string
        count = 0
        finish_reason: FinishReason = "length"
        self._llama.set_seed(
            llama_cpp.LLAMA_DEFAULT_SEED if request.seed is None else request.seed
        )
        recorder = _LogitsRecorder() if request.logprobs else None
        tokens = self._llama.generate(
            prompt,
            top_k=_TOP_K,
            top_p=request.top_p,
            min_p=_MIN_P,
            temp=request.temperature,
            # What keeps a small model from looping; a grammar's answer is
            # all repeated braces and quotes, so it goes without.
            repeat_penalty=1.0 if grammar else self._repeat_penalty,
            frequency_penalty=request.frequency_penalty,
            presence_penalty=request.presence_penalty,
            grammar=grammar,
            logits_processor=llama_cpp.LogitsProcessorList([recorder])
            if recorder
            else None,
        )
        logprobs: list[TokenLogprob] = []
        try:
            for token in tokens:
                if job.cancelled.is_set():
                    return None
                if self._closing.is_set():
                    raise ModelUnavailableError("The local model is shutting down.")
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish_reason = "stop"
                    break
                if recorder is not None:
                    logprobs.append(
                        recorder.entry(token, request.top_logprobs, self._piece)
                    )
                count += 1
                held += decoder.decode(self._llama.detokenize([token]))
                ready, held, hit_stop = _split_at_stop(held, stops)
                if ready:
                    job.post(ready)
                if hit_stop:
                    return _Finished("stop", count, _kept(logprobs, recorder))
                if count >= max_tokens:
                    break
        finally:
            tokens.close()
        held += decoder.decode(b"", final=True)
        if held:
            job.post(held)
        return _Finished(finish_reason, count, _kept(logprobs, recorder))

    def _piece(self, token: int) -> str:
        return self._llama.detokenize([token]).decode("utf-8", errors="replace")

    def _format(self, messages: Sequence[Mapping[str, str]]) -> ChatFormatterResponse:
        try:
            return self._formatter(messages=[dict(m) for m in messages])
        except Exception as exc:  # a chat template may raise anything it dislikes
            raise InvalidRequestError(
                f"The messages do not fit this model's chat template: {exc}"
            ) from exc

    def _grammar_for(self, request: ChatRequest) -> LlamaGrammar | None:
        if request.json_schema is not None:
            return self._grammar(request.json_schema)
        if request.json_object:
            return self._grammar(None)
        return None

    def _grammar(self, schema: Mapping[str, Any] | None) -> LlamaGrammar:
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
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
            self._grammars[key] = grammar
        return grammar


class _LogitsRecorder:
    """Sees each step's raw logits (first in the sampler chain, so before
    penalties and grammar) and keeps them for the token chosen from them."""

    def __init__(self) -> None:
        self._logits: np.ndarray | None = None

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        self._logits = np.array(logits, dtype=np.float64)
        return logits

    def entry(self, token: int, top: int, piece: Callable[[int], str]) -> TokenLogprob:
        assert self._logits is not None
        logits = self._logits
        shifted = logits - logits.max()
        log_probs = shifted - math.log(float(np.exp(shifted).sum()))
        best = np.argpartition(-log_probs, top)[:top] if top else np.array([], int)
        ranked = sorted(best.tolist(), key=lambda t: -log_probs[t])
        return TokenLogprob(
            piece(token),
            float(log_probs[token]),
            tuple((piece(t), float(log_probs[t])) for t in ranked),
        )


def _kept(
    logprobs: list[TokenLogprob], recorder: _LogitsRecorder | None
) -> tuple[TokenLogprob, ...] | None:
    return tuple(logprobs) if recorder is not None else None


class _ExpMovingAverage:
    """Recent values weigh most; one slow outlier fades within a few requests."""

    def __init__(self, initial: float, weight: float = 0.3) -> None:
        self.value = initial
        self._weight = weight

    def add(self, sample: float) -> None:
        self.value += self._weight * (sample - self.value)


def _chat_formatter(llama: llama_cpp.Llama) -> ChatFormatter:
    """The chat template shipped in the GGUF, or ChatML for a file without one."""
    template = llama.metadata.get("tokenizer.chat_template")
    if template is None:
        logger.warning("model file has no chat template; using ChatML")
        return format_chatml
    eos = llama.token_eos()
    bos = llama.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=llama.detokenize([eos], special=True).decode() if eos != -1 else "",
        bos_token=llama.detokenize([bos], special=True).decode() if bos != -1 else "",
    )


def _as_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else stop


def _split_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """Split `text` into (send now, hold back, a stop string was found).

    Text is held back while its end could still grow into a stop string.
    """
    cuts = [i for stop in stops if stop and (i := text.find(stop)) != -1]
    if cuts:
        return text[: min(cuts)], "", True
    hold = max(
        (
            n
            for stop in stops
            for n in range(len(stop) - 1, 0, -1)
            if text.endswith(stop[:n])
        ),
        default=0,
    )
    return text[: len(text) - hold], text[len(text) - hold :], False
