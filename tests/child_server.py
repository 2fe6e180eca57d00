"""A server in a child process, as the tests (and `make eval`) run one: on a
free loopback port, its output in a file, waited for until a URL of its
answers, stopped at the end. A failure shows the end of that file: a child
that died, or never got ready, or a test that failed while it ran (printed to
stderr, which pytest shows with the failing test)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChildServerFailed(RuntimeError):
    """The child exited or never answered; the message ends with its log."""


class ChildServer:
    """`argv` run with `env` (added to ours) in `cwd`, serving on `port`
    (argv or env tell it so), stderr (and with `stdout=True` stdout too)
    appended to `log`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.stdout = stdout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ChildServer:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log if self.stdout else None,
                stderr=log,
            )
        return self

    def wait_ready(self, path: str, *, within: float = 60) -> None:
        """Until `path` answers 200; ChildServerFailed if the child exits first
        or `within` seconds pass."""
        url = self.url + path
        deadline = time.monotonic() + within
        while True:
            self.check_alive()
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(url, timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ChildServerFailed(
                    f"{url} did not answer within {within} s\n{self.tail()}"
                )
            time.sleep(0.05)

    def check_alive(self) -> None:
        assert self.process is not None, "not started"
        if (code := self.process.poll()) is not None:
            raise ChildServerFailed(f"the server exited ({code})\n{self.tail()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 4000) -> str:
        """The end of its log: what a failure shows."""
        state = "running" if self.running else "stopped"
        command = " ".join(self.argv[1:4])
        return f"--- {command} ({state}), end of {self.log}:\n{self.output()[-chars:]}"

    def send_signal(self, number: int = signal.SIGTERM) -> None:
        assert self.process is not None, "not started"
        self.process.send_signal(number)

    def wait(self, timeout: float) -> int:
        assert self.process is not None, "not started"
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, and SIGKILL if it does not end within `timeout`."""
        if not self.running:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> ChildServer:
        return self if self.process is not None else self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if error is not None and not isinstance(error, ChildServerFailed):
            print(self.tail(), file=sys.stderr)  # why, from the server's side
