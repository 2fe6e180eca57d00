"""The reference for "CPU per request": the least a Python server must do for a
summary — a bare Starlette route that parses JSON, calls the openai SDK through
one shared client and answers JSON. No GraphQL, auth, rate limits or logging.
And for a stream: `/stream` reads the SDK's stream and sends each text delta
on as an SSE event, then one with the usage. `/answer` is the floor under
both: it parses the same JSON body and answers a fixed JSON of a summary's
size without calling anything, the least any route served by uvicorn and
Starlette costs here.

It imports nothing of ours (our tasks would bring Strawberry and the rest into
its memory): the rig hands it the chat arguments our tasks make, as JSON
templates in BENCH_CHAT_TEMPLATES (bench/workload.py `baseline_templates`).

Run: BENCH_UPSTREAM_URL=http://127.0.0.1:PORT/v1 \\
    BENCH_CHAT_TEMPLATES="$(python -c 'from bench.workload import baseline_templates as t; print(t())')" \\
    python -m uvicorn bench.baseline_app:app
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

# What `chat.completions.create` gets: our tasks' arguments with the caller's
# text where PLACEHOLDER is (kept equal to bench/workload.py's).
PLACEHOLDER = "\u0000text\u0000"
TEMPLATES = json.loads(os.environ["BENCH_CHAT_TEMPLATES"])


def _arguments(template: str, text: str) -> dict:
    arguments = dict(TEMPLATES[template])
    arguments["messages"] = [
        {**message, "content": message["content"].replace(PLACEHOLDER, text)}
        for message in arguments["messages"]
    ]
    return arguments


def chat_arguments(text: str) -> dict:
    return _arguments("summarize", text)


def stream_chat_arguments(prompt: str) -> dict:
    return _arguments("stream", prompt)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, openai.AsyncOpenAI]]:
    # Same client settings as our server's defaults (timeout, retries).
    client = openai.AsyncOpenAI(
        api_key="bench",
        base_url=os.environ["BENCH_UPSTREAM_URL"],
        timeout=30.0,
        max_retries=2,
    )
    try:
        yield {"client": client}
    finally:
        await client.close()


async def summarize(request: Request) -> JSONResponse:
    body = await request.json()
    client: openai.AsyncOpenAI = request.state.client
    completion = await client.chat.completions.create(**chat_arguments(body["text"]))
    usage = completion.usage
    return JSONResponse(
        {
            "text": completion.choices[0].message.content,
            "model": completion.model,
            "usage": {"totalTokens": usage.total_tokens if usage else None},
        }
    )


# A summary's answer as `/summarize` sends it, made once.
FIXED_ANSWER = {
    "text": "A short summary of the text, about as long as the fake upstream's.",
    "model": "gpt-4o-mini",
    "usage": {"totalTokens": 42},
}


async def answer(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({**FIXED_ANSWER, "chars": len(body["text"])})


async def stream(request: Request) -> StreamingResponse:
    body = await request.json()
    client: openai.AsyncOpenAI = request.state.client
    chunks = await client.chat.completions.create(
        **stream_chat_arguments(body["prompt"])
    )

    async def events() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                text = chunk.choices[0].delta.content
                yield b"data: " + json.dumps({"text": text}).encode() + b"\n\n"
            if chunk.usage:
                usage = {"completionTokens": chunk.usage.completion_tokens}
                yield b"data: " + json.dumps({"usage": usage}).encode() + b"\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/summarize", summarize, methods=["POST"]),
        Route("/stream", stream, methods=["POST"]),
        Route("/answer", answer, methods=["POST"]),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)
