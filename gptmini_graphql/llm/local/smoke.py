"""Check, right after install, that the embedded model can generate on this CPU.

    python -m gptmini_graphql.llm.local.smoke [--model PATH]

A llama.cpp built for the wrong CPU does not fail at import: it dies with
SIGSEGV or SIGILL at the first generation. So `make install` (and the
Dockerfile) end here: a child process loads the model and generates a few
tokens, and a crash fails the install with what happened and how to fix it,
instead of a server that dies at its first request.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from gptmini_graphql.llm.local.process import describe_exit
from gptmini_graphql.settings import Settings

MODULE = "gptmini_graphql.llm.local.smoke"
TOKENS = 8
TIMEOUT_SECONDS = 120
BUILD_SCRIPT = "scripts/install-llama-cpp.sh"


def check(model: Path) -> tuple[str, bool] | None:
    """None when a generation succeeded in a child process, else the problem
    and whether it was a crash (a signal), which points at the CPU."""
    command = [sys.executable, "-X", "faulthandler", "-m", MODULE, "--child"]
    command += ["--model", str(model)]
    try:
        result = subprocess.run(  # noqa: S603 (our own interpreter and module)
            command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        return f"a {TOKENS}-token generation took over {TIMEOUT_SECONDS} s", False
    if result.returncode == 0:
        print(result.stdout.strip())  # the child's own report
        return None
    stderr = "\n".join(result.stderr.strip().splitlines()[-15:])
    problem = f"the test generation {describe_exit(result.returncode)}:\n{stderr}"
    return problem, result.returncode < 0


def _generate(model: Path) -> str:
    """One short generation, here: what the install log shows of it."""
    import llama_cpp

    from gptmini_graphql.llm.local.chat import ChatRequest
    from gptmini_graphql.llm.local.engine import LocalModel

    async def main() -> str:
        local = LocalModel.load(model, context_size=512, threads=1, queue_size=0)
        try:
            completion = await local.complete(
                ChatRequest(
                    messages=[{"role": "user", "content": "Say hello."}],
                    max_tokens=TOKENS,
                    temperature=0,
                )
            )
        finally:
            local.close()
        features = llama_cpp.llama_print_system_info().decode().strip()
        return (
            f"llama.cpp generated {completion.usage.completion_tokens} tokens on "
            f"this CPU with {model.name} ({features})."
        )

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description="Check that llama.cpp generates here."
    )
    parser.add_argument("--model", type=Path, help="default: LOCAL_MODEL_PATH")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    model = args.model or Settings().local_model_path
    if args.child:
        print(_generate(model))
        return 0
    outcome = check(model)
    if outcome is None:
        return 0
    problem, crashed = outcome
    if not crashed:
        print(f"error: the embedded model cannot generate: {problem}", file=sys.stderr)
        return 1
    print(
        f"error: llama.cpp crashed on this machine: {problem}\n\n"
        f"It was built by {BUILD_SCRIPT} for x86-64-v3 (AVX2) unless "
        "LLAMA_CMAKE_ARGS said otherwise. For an older CPU, rebuild with "
        "its instruction sets, for example:\n"
        "  LLAMA_CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF "
        "-DGGML_BMI2=OFF' make install\n"
        "or use a remote model instead (set OPENAI_API_KEY or OPENAI_BASE_URL).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
