"""The floor for the embedded model: `llama_cpp.Llama.create_chat_completion`
called directly, in a process of its own (so it shares no GIL with the bench),
loaded as our server loads it (same file, context size and threads).

    python -m bench.llama_direct MODEL_PATH THREADS CONTEXT_SIZE

Prints one JSON line when loaded, then answers each JSON line on stdin
(`create_chat_completion`'s keyword arguments) with one JSON line: the wall
time of the call, its usage, finish reason and text. Ends at end of input.
"""

from __future__ import annotations

import json
import sys
import time

import llama_cpp


def main() -> None:
    path, threads, context_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    started = time.perf_counter()
    llama = llama_cpp.Llama(
        model_path=path,
        n_ctx=context_size,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    _say({"load_s": round(time.perf_counter() - started, 3)})
    for line in sys.stdin:
        started = time.perf_counter()
        answer = llama.create_chat_completion(**json.loads(line))
        seconds = time.perf_counter() - started
        choice = answer["choices"][0]
        _say(
            {
                "seconds": seconds,
                "usage": answer["usage"],
                "finish_reason": choice["finish_reason"],
                "text": choice["message"]["content"],
            }
        )
    llama.close()


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
