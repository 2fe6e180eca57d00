"""Seeing the embedded model's process from outside, as an operator would:
through /proc (which children run `llm serve`, on which socket) and its own
HTTP endpoints (how many requests it holds)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2

MODEL_FILE = Path(__file__).parents[1] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# Greedy decoding of this prompt writes on until the token cap: many seconds
# of work for the model, unless something stops it.
LONG_PROMPT = "Write a very long story about a dragon. Make it at least 3000 words."


@dataclass(frozen=True)
class ModelProcessView:
    pid: int
    socket: str

    def in_flight(self) -> int:
        """Requests the model holds now (generating or queued)."""
        transport = httpx2.HTTPTransport(uds=self.socket)
        with httpx2.Client(transport=transport, timeout=5) as http:
            response = http.get("http://model/readyz")
        return response.json()["in_flight"] if response.status_code == 200 else 0

    def wait_in_flight(self, count: int, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while self.in_flight() != count:
            assert time.monotonic() < deadline, f"not {count} requests in the model"
            time.sleep(0.02)


def model_processes(ancestor: int | None = None) -> list[ModelProcessView]:
    """The `llm serve` processes descended from `ancestor` (default: us)."""
    ancestor = os.getpid() if ancestor is None else ancestor
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue  # gone meanwhile
        if "llm" in argv and "serve" in argv and "--uds" in argv:
            pid = int(entry.name)
            if _descends_from(pid, ancestor):
                found.append(ModelProcessView(pid, argv[argv.index("--uds") + 1]))
    return found


def the_model_process(within: float = 30) -> ModelProcessView:
    deadline = time.monotonic() + within
    while len(found := model_processes()) != 1:
        assert time.monotonic() < deadline, f"{len(found)} model processes, not 1"
        time.sleep(0.05)
    return found[0]


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        # The parent is the second field after the command, which may hold spaces.
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False
