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

What it takes and gives is chat.py's; the worker/coroutine handoff jobs.py's;
the chat template and JSON grammars prompting.py's; logprobs and stop
strings sampling.py's.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import llama_cpp

from gptmini_graphql.llm.answers import FinishReason, TokenLogprob
from gptmini_graphql.llm.local.chat import (
    ChatRequest,
    Completion,
    ContextLengthExceededError,
    LocalModelError,
    ModelUnavailableError,
    QueueFullError,
)
from gptmini_graphql.llm.local.jobs import Finished, Generation, Job, Started
from gptmini_graphql.llm.local.model_file import check_model_file
from gptmini_graphql.llm.local.prompting import ChatTemplate, Grammars
from gptmini_graphql.llm.local.sampling import (
    LogitsRecorder,
    as_list,
    kept,
    split_at_stop,
)

logger = logging.getLogger("gptmini_graphql.llm")

# Sampling knobs the Chat Completions protocol does not expose; these are
# llama.cpp's usual defaults and keep a small model from wandering.
_TOP_K = 40
_MIN_P = 0.05


class LocalModel:
    """A loaded GGUF model serving chat completions one at a time."""

    def __init__(
        self, llama: llama_cpp.Llama, *, queue_size: int, repeat_penalty: float = 1.0
    ) -> None:
        self._llama = llama
        self._repeat_penalty = repeat_penalty
        self._template = ChatTemplate(llama)
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._grammars = Grammars()
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
        self._grammars.warm_up(schemas)

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
        job = Job(request, asyncio.get_running_loop())
        try:
            self._worker.submit(self._run, job)
        except RuntimeError:  # shut down
            self._release()
            raise
        try:
            first = await job.events.get()
            if isinstance(first, BaseException):
                raise first
            assert isinstance(first, Started)
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

    def _run(self, job: Job) -> None:
        outcome: Finished | BaseException | None = None
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
            if isinstance(outcome, Finished):
                self._seconds_per_request.add(time.monotonic() - started)
            # Free the slot before the last event, so that a client that sees
            # its answer complete can send the next request and be admitted.
            self._release()
        if outcome is not None:
            job.post(outcome)

    def _generate(self, job: Job) -> Finished | None:
        request = job.request
        formatted = self._template.format(request.messages)
        prompt = self._llama.tokenize(
            formatted.prompt.encode("utf-8"),
            add_bos=not formatted.added_special,
            special=True,
        )
        room = self.context_size - len(prompt)
        if room <= 0:
            raise ContextLengthExceededError(len(prompt), self.context_size)
        grammar = self._grammars.for_request(request)
        job.post(Started(len(prompt)))

        max_tokens = min(request.max_tokens or room, room)
        stops = [*request.stop, *as_list(formatted.stop)]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held = ""  # decoded text not sent yet: it may be the start of a stop string
        count = 0
        finish_reason = FinishReason.LENGTH
        self._llama.set_seed(
            llama_cpp.LLAMA_DEFAULT_SEED if request.seed is None else request.seed
        )
        recorder = LogitsRecorder() if request.logprobs else None
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
                    finish_reason = FinishReason.STOP
                    break
                if recorder is not None:
                    logprobs.append(
                        recorder.entry(token, request.top_logprobs, self._piece)
                    )
                count += 1
                held += decoder.decode(self._llama.detokenize([token]))
                ready, held, hit_stop = split_at_stop(held, stops)
                if ready:
                    job.post(ready)
                if hit_stop:
                    return Finished(FinishReason.STOP, count, kept(logprobs, recorder))
                if count >= max_tokens:
                    break
        finally:
            tokens.close()
        held += decoder.decode(b"", final=True)
        if held:
            job.post(held)
        return Finished(finish_reason, count, kept(logprobs, recorder))

    def _piece(self, token: int) -> str:
        return self._llama.detokenize([token]).decode("utf-8", errors="replace")


class _ExpMovingAverage:
    """Recent values weigh most; one slow outlier fades within a few requests."""

    def __init__(self, initial: float, weight: float = 0.3) -> None:
        self.value = initial
        self._weight = weight

    def add(self, sample: float) -> None:
        self.value += self._weight * (sample - self.value)
