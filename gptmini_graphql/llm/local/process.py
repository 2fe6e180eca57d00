"""The model process: `llm serve` as a child of ours, restarted whenever it dies.

llama.cpp is native code; a segfault, an abort or the OOM killer ends the
process it runs in. So it never runs in the API's process: `serve` (or an
app's lifespan, when nothing else supervises it) starts this child on a Unix
socket in a private directory, and the API talks to it as to any
OpenAI-compatible upstream. When the child dies, requests waiting on it fail
at once (their connections close), `/readyz` says why, and the supervisor
starts a new child after a backoff that grows while it keeps crashing.

    process = ModelProcess(settings)
    process.start()          # returns at once; the child loads in the background
    process.url              # "unix:/tmp/gptmini-llm-…/model.sock"
    process.problem()        # its last crash and where its restart stands
    process.stop()

A thread, not a task: `serve --workers N` supervises from the parent process,
which runs no event loop of ours.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gptmini_graphql.llm.local.model_file import check_model_file
from gptmini_graphql.settings import Settings

logger = logging.getLogger("gptmini_graphql.llm")

# Backoff between restarts: doubles from the first to the last while the
# child keeps dying young, and starts over once one has lived STABLE_SECONDS.
FIRST_RESTART_DELAY = 0.25
LAST_RESTART_DELAY = 30.0
STABLE_SECONDS = 60.0
STOP_TIMEOUT = 10.0


class ModelProcess:
    """Starts, watches and restarts one `llm serve` child."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._directory: Path | None = None
        self.restarts = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._last_exit: str | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._supervise, name="model-process", daemon=True
        )

    @property
    def socket_path(self) -> Path:
        assert self._directory is not None, "start() first"
        return self._directory / "model.sock"

    @property
    def url(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def start(self) -> None:
        # A missing file is the common mistake: fail the start-up, loudly,
        # rather than restart a child that cannot load it.
        check_model_file(self.settings.local_model_path)
        # Private to us (0700): nobody else can talk to the model, or squat
        # its socket's name.
        self._directory = Path(tempfile.mkdtemp(prefix="gptmini-llm-"))
        self._spawn()
        self._thread.start()

    def problem(self) -> str | None:
        """What the model process is going through, for a `/readyz` that
        found it not answering; None if it never failed."""
        if self._last_exit is None:
            return None
        if self.pid is None:
            return (
                f"The embedded model's process {self._last_exit}; it is about "
                "to be restarted."
            )
        return (
            f"The embedded model's process is starting again (restart "
            f"{self.restarts}, after it {self._last_exit})."
        )

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL) and the supervision."""
        self._stopping.set()
        with self._lock:
            child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    # --- on the supervising thread ------------------------------------------

    def _spawn(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        command = [
            sys.executable,
            # A native crash prints the Python stack it happened under.
            "-X",
            "faulthandler",
            "-m",
            "gptmini_graphql",
            "llm",
            "serve",
            "--uds",
            str(self.socket_path),
            "--exit-with-stdin",
        ]
        with self._lock:
            if self._stopping.is_set():
                return  # stop() has taken the last child already
            # stdin stays open as long as we live: its end tells the child
            # to stop, even when we were killed and could not say so.
            child = subprocess.Popen(  # noqa: S603 (our own interpreter)
                command,
                stdin=subprocess.PIPE,
                env=self._child_environment(),
                # Out of our process group: a terminal's Ctrl-C is for us to
                # handle (draining requests first), not for the model to die of.
                start_new_session=True,
            )
            self._child = child
        logger.info(
            "model process started",
            extra={"pid": child.pid, "socket": str(self.socket_path)},
        )

    def _child_environment(self) -> dict[str, str]:
        """The settings the child needs, from our settings object (tests
        build them in code), and none of the others: native code has no use
        for JWT_SECRET or OPENAI_API_KEY."""
        settings = self.settings
        ours = {name.upper() for name in Settings.model_fields}
        return {
            **{
                name: value
                for name, value in os.environ.items()
                if name not in ours or name.startswith("LOCAL_")
            },
            "LOCAL_MODEL_PATH": str(settings.local_model_path),
            "LOCAL_MODEL_NAME": settings.local_model_name,
            "LOCAL_CONTEXT_SIZE": str(settings.local_context_size),
            "LOCAL_THREADS": str(settings.local_threads),
            "LOCAL_QUEUE_SIZE": str(settings.local_queue_size),
            "LOCAL_REPEAT_PENALTY": str(settings.local_repeat_penalty),
            "LOG_LEVEL": settings.log_level,
        }

    def _supervise(self) -> None:
        crashes_in_a_row = 0
        while True:
            child = self._child
            assert child is not None
            started = time.monotonic()
            code = child.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            crashes_in_a_row = 1 if lived >= STABLE_SECONDS else crashes_in_a_row + 1
            delay = min(
                LAST_RESTART_DELAY, FIRST_RESTART_DELAY * 2 ** (crashes_in_a_row - 1)
            )
            self._last_exit = describe_exit(code)
            logger.error(
                "model process exited",
                extra={
                    "pid": child.pid,
                    "exit": self._last_exit,
                    "lived_s": round(lived, 1),
                    "restart_in_s": delay,
                    "restarts": self.restarts,
                },
            )
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self._spawn()
            if self._stopping.is_set():
                return


def describe_exit(returncode: int) -> str:
    """`exited with SIGSEGV` or `exited with status 1`, for logs and /readyz."""
    if returncode < 0:
        try:
            return f"exited with {signal.Signals(-returncode).name}"
        except ValueError:
            return f"exited with signal {-returncode}"
    return f"exited with status {returncode}"
