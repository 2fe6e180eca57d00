"""llama-cpp-python's own OpenAI-compatible server, run as a child process.

A server no one here wrote, over the same model file as the embedded model:
what "any OpenAI-compatible server" is tested against. Being a child, a native
crash in it fails the test that needed it (with its log), never the run.
"""

from __future__ import annotations

import re
import signal
import sys
import tempfile
from pathlib import Path

from tests.child_server import ChildServer, ChildServerFailed, free_port

ROOT = Path(__file__).parents[2]
MODEL_FILE = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# What the server lists and answers as, so the suite's model is the one served.
ALIAS = "smollm2-135m-instruct"
CONTEXT = 2048
START_SECONDS = 120
_ACCESS = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" (\d{3})')


def why_not_runnable() -> str | None:
    """Why the suite must skip here, or None."""
    if not MODEL_FILE.is_file():
        return (
            f"no model file at {MODEL_FILE}: `make install` fetches it "
            "(python -m gptmini_graphql.llm.model_file)"
        )
    for module in ("llama_cpp", "fastapi", "sse_starlette", "starlette_context"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed: `make install` installs the dev extra"
    return None


class ModelServer(ChildServer):
    """`python -m llama_cpp.server` on a free loopback port, its log in a file;
    `api_url` is its OpenAI-compatible base URL."""

    def __init__(self) -> None:
        port = free_port()
        log = Path(tempfile.mkstemp(prefix="llama-cpp-server-", suffix=".log")[1])
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(MODEL_FILE)]
        super().__init__(
            [
                *argv,
                "--model_alias",
                ALIAS,
                "--n_ctx",
                str(CONTEXT),
                "--n_threads",
                "1",  # the other core runs our server and the tests
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            port=port,
            log=log,
            stdout=True,  # the access log, which chat_statuses reads
            # Access log lines reach the file before the response does.
            env={"PYTHONUNBUFFERED": "1"},
        )
        self.api_url = f"{self.url}/v1"
        self.start()
        try:
            self.wait_ready("/v1/models", within=START_SECONDS)
        except ChildServerFailed:
            self.stop()
            raise

    def chat_statuses(self) -> list[int]:
        """The HTTP status of every chat completion it answered, in order."""
        return [int(s) for s in _ACCESS.findall(self.output())]

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10) -> None:
        super().stop(timeout)
        self.log.unlink(missing_ok=True)
