"""`python -m bench --only litellm`: the LiteLLM proxy as a reference (issue
17's target 6), when it is installed in a virtualenv of its own. It is never
a dependency of ours; to have it measured, once:

    python3 -m venv ~/.cache/gptmini-graphql/litellm && \\
        ~/.cache/gptmini-graphql/litellm/bin/pip install 'litellm[proxy]'

(or point BENCH_LITELLM at another install's `bin/litellm`). Without it the
scenario says so and is skipped.

The proxy runs as it is documented to: one worker (uvicorn, its default
logging), a master key (so its callers are authenticated, as ours are), one
model on the same fake upstream, no database and no Redis. It answers the
chat completion our summarize makes; our server answers summarize (a miss)
as `rig.api` runs it. Both at 64 connections, interleaved over rounds.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from bench.capacity import summarize_request
from bench.load import http_request
from bench.registry import Options, http_load, json_check, scenario, summary_check
from bench.rig import Rig
from bench.servers import Server
from bench.workload import MODEL, TEXT, chat_body

DEFAULT = Path.home() / ".cache" / "gptmini-graphql" / "litellm" / "bin" / "litellm"
CONCURRENCY = 64
START_TIMEOUT = 180.0  # seconds: it imports a great deal


def executable() -> tuple[Path | None, str]:
    """(LiteLLM's executable, where it was looked for)."""
    named = os.environ.get("BENCH_LITELLM")
    path = Path(named) if named else DEFAULT
    where = f"BENCH_LITELLM={named}" if named else str(DEFAULT)
    return (path if path.is_file() and os.access(path, os.X_OK) else None), where


@scenario(
    "litellm",
    f"the LiteLLM proxy (one worker, same fake upstream, master key) vs our "
    f"summarize (a miss), {CONCURRENCY} connections, interleaved: requests/s and "
    "CPU per request; skipped unless installed (BENCH_LITELLM or "
    "~/.cache/gptmini-graphql/litellm)",
)
def litellm(rig: Rig, options: Options) -> list[dict]:
    path, where = executable()
    if path is None:
        note = f"skipped: no LiteLLM at {where} (see bench/litellm.py to install)"
        return [{"variant": "skipped", "concurrency": CONCURRENCY, "note": note}]
    proxy, key = _start(rig, path)
    ours = rig.api()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    sides = [
        (
            "litellm",
            proxy,
            http_request(
                "POST", "/v1/chat/completions", proxy.port, chat_body(TEXT), headers
            ),
            json_check("choices"),
        ),
        ("ours", ours, summarize_request(ours), summary_check),
    ]
    rows = []
    rounds = 1 if options.quick else max(options.rounds, 2)
    for round_ in range(1, rounds + 1):
        # Each round the other one first.
        ordered = sides if round_ % 2 else sides[::-1]
        for side, server, request, check in ordered:
            rows += [
                {"variant": side, "side": side, "round": round_, **row}
                for row in http_load(
                    rig, options, server, request, check, concurrency=(CONCURRENCY,)
                )
            ]
    return rows


def _start(rig: Rig, path: Path) -> tuple[Server, str]:
    key = "sk-bench-" + secrets.token_hex(32)
    folder = rig.cwd / "litellm"
    folder.mkdir(exist_ok=True)
    # JSON is YAML: no YAML writer needed.
    (folder / "config.yaml").write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": rig.upstream().url + "/v1",
                            "api_key": "bench",
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False},
                "general_settings": {"master_key": key},
            },
            indent=2,
        )
    )
    argv = [
        str(path), "--config", str(folder / "config.yaml"), "--host", "127.0.0.1",
        "--port", "{port}", "--num_workers", "1",
    ]  # fmt: skip
    env = {
        # Ours must not leak in: no database, no Redis, not our packages.
        "DATABASE_URL": None,
        "REDIS_URL": None,
        "PYTHONPATH": None,
        # The price list it ships, not a download at start.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    server = rig.start(
        "litellm",
        argv,
        env=env,
        cwd=folder,
        health="/health/liveliness",
        start_timeout=START_TIMEOUT,
        with_children=True,
    )
    return server, key
