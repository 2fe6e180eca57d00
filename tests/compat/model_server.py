"""llama-cpp-python's own OpenAI-compatible server, run as a child process.

A server no one here wrote, over the same model file as the embedded model:
what "any OpenAI-compatible server" is tested against. Being a child, a native
crash in it fails the test that needed it (with its log), never the run.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ModelServer:
    """`python -m llama_cpp.server` on a free loopback port, its log in a file."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(tempfile.mkstemp(prefix="llama-cpp-server-", suffix=".log")[1])
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(MODEL_FILE),
                    "--model_alias",
                    ALIAS,
                    "--n_ctx",
                    str(CONTEXT),
                    "--n_threads",
                    "1",  # the other core runs our server and the tests
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Access log lines reach the file before the response does.
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the server did not start in {START_SECONDS} s\n{self.tail()}"
        )

    def chat_statuses(self) -> list[int]:
        """The HTTP status of every chat completion it answered, in order."""
        return [int(s) for s in _ACCESS.findall(self.log.read_text(errors="replace"))]

    def tail(self, chars: int = 3000) -> str:
        """The end of its log: what a failing test shows."""
        alive = "running" if self.process.poll() is None else self.process.returncode
        text = self.log.read_text(errors="replace")[-chars:]
        return f"--- llama_cpp.server ({alive}), end of {self.log}:\n{text}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.unlink(missing_ok=True)
