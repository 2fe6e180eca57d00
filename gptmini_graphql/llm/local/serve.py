"""`python -m gptmini_graphql llm serve`: the embedded model's server as a
process of its own (uvicorn, on a port or a Unix socket)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from gptmini_graphql.llm.local.server import create_embedded_app
from gptmini_graphql.settings import Settings

logger = logging.getLogger("gptmini_graphql.llm")


def serve_embedded(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    uds: str | None = None,
    exit_with_stdin: bool = False,
    warm_up_schemas: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Run the embedded model as its own server (`... llm serve`).

    `uds`: listen on this Unix socket instead of host:port (how `serve`
    reaches the model process it supervises). `exit_with_stdin`: stop when
    standard input closes, that is when the supervising process is gone, even
    if it was killed and could not say so.
    """
    import uvicorn

    from gptmini_graphql.logging import RequestIdMiddleware, configure_logging

    configure_logging(settings.log_level)
    if exit_with_stdin:
        threading.Thread(target=_exit_at_end_of_stdin, daemon=True).start()
    uvicorn.run(
        RequestIdMiddleware(
            create_embedded_app(settings, warm_up_schemas=warm_up_schemas)
        ),
        host=host,
        port=port,
        uds=uds,
        log_config=None,
        access_log=False,  # each completion logs its own line
        # A generation in progress stops at the next token once the lifespan
        # closes the model; do not wait for it to finish on its own.
        timeout_graceful_shutdown=2,
    )


def _exit_at_end_of_stdin() -> None:
    while sys.stdin.buffer.read(4096):
        pass
    logger.info("supervisor gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)
