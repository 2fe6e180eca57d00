"""`python -m bench.profiled_serve FILE serve ...`: the server's command line,
with cProfile started by SIGUSR1 and stopped (its stats written to FILE) by
SIGUSR2 (bench/callgrind.py's --cprofile: which Python functions a hit
spends its instructions in, which callgrind sees only as the interpreter's)."""

from __future__ import annotations

import cProfile
import signal
import sys
from typing import Any

from gptmini_graphql.__main__ import main


def run() -> int:
    output, argv = sys.argv[1], sys.argv[2:]
    profile = cProfile.Profile()

    def start(*_: Any) -> None:
        profile.enable()

    def stop(*_: Any) -> None:
        profile.disable()
        profile.dump_stats(output)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(run())
