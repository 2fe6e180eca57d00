"""py-spy's raw samples (collapsed stacks, `--nolineno`) as markdown: the top
functions by inclusive and by self time, and the time of each component of
the request path, as a share of the samples and as CPU ms per request.

`python -m bench.profile_report FILE [CPU_MS_PER_REQUEST]` reads one file.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# First match wins: the more specific first. A frame is "function (path)".
COMPONENTS: list[tuple[str, str]] = [
    (r"gptmini_graphql/(extensions/auth|auth/)", "auth"),
    (r"/jwt/|/argon2/", "auth"),
    (r"gptmini_graphql/(extensions/rate_limit|rate_limits)", "rate limit"),
    (r"/limits/", "rate limit"),
    (r"gptmini_graphql/spend/", "spend"),
    (r"gptmini_graphql/shared_redis|/redis/|/hiredis/", "Redis client"),
    (r"gptmini_graphql/llm/cache", "response cache"),
    (r"gptmini_graphql/extensions/", "our extensions"),
    (r"gptmini_graphql/(http/|persisted_queries)", "our endpoint"),
    (r"gptmini_graphql/(operation_log|logging)", "logging"),
    (r"gptmini_graphql/metrics", "metrics"),
    (r"/prometheus_client/", "metrics"),
    (r"gptmini_graphql/tracing|/opentelemetry/", "tracing"),
    (r"gptmini_graphql/(middleware|drain)", "our middleware"),
    (r"gptmini_graphql/llm/", "our LLM seam"),
    (r"gptmini_graphql/(schema|tasks|context|errors)", "our resolvers/tasks"),
    (r"gptmini_graphql/(db/)", "database"),
    (r"/(sqlalchemy|asyncpg|aiosqlite|alembic)/", "database"),
    (r"gptmini_graphql/", "ours (other)"),
    (r"/strawberry/extensions/", "strawberry extensions"),
    (r"/strawberry/(http|asgi)/|/cross_web/", "strawberry HTTP view"),
    (r"/strawberry/schema/", "strawberry schema/execute"),
    (r"/strawberry/", "strawberry (other)"),
    (r"/graphql/(language)/", "graphql-core parse"),
    (r"/graphql/(validation)/", "graphql-core validate"),
    (r"/graphql/(execution|pyutils)/", "graphql-core execute"),
    (r"/graphql/", "graphql-core (other)"),
    (r"/starlette/middleware/", "starlette middleware"),
    (r"/starlette/", "starlette"),
    (r"/uvicorn/", "uvicorn"),
    (r"/openai/", "openai SDK"),
    (r"/(httpx2?|httpcore2?|h11|anyio|sniffio|aiohttp|certifi)/", "httpx/httpcore"),
    (r"/pydantic(_core)?/", "pydantic"),
    (r"/(json|orjson)/", "JSON"),
    (r"/logging/", "logging"),
    (r"/asyncio/|/uvloop/", "asyncio"),
]
_RULES = [(re.compile(pattern), name) for pattern, name in COMPONENTS]


def component(frame: str) -> str:
    path = frame.rpartition(" (")[2].rstrip(")")
    path = "/" + path.replace("\\", "/")
    for pattern, name in _RULES:
        if pattern.search(path):
            return name
    if "site-packages/" in path:  # another library: by its package
        return "lib: " + path.split("site-packages/")[1].split("/")[0]
    return "stdlib/other"


# Innermost frames of threads waiting for work: py-spy's idle detection
# misses a thread-pool worker blocked on its queue, and nothing runs there.
IDLE = {"_worker (concurrent/futures/thread.py)"}
# Helpers of every library (contextlib, functools, typing...): their time is
# charged to the component that called them.
GENERIC = "stdlib/other"
TRUNK = 0.8


def read(raw: Path) -> tuple[list[tuple[list[str], int]], int]:
    """(frames outermost first, samples) of each stack line, and the
    samples of idle waits left out."""
    stacks, idle = [], 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = stack.split(";")
            if frames[-1] in IDLE:
                idle += int(count)
            else:
                stacks.append((frames, int(count)))
    return stacks, idle


def tallies(stacks: list[tuple[list[str], int]]) -> dict[str, Counter[str]]:
    """Samples per function (inclusive: on the stack; self: innermost) and
    per component (the innermost frame's, a generic helper's charged to the
    nearest caller of a known component)."""
    out: dict[str, Counter[str]] = {
        key: Counter() for key in ("inclusive", "self", "component", "caller")
    }
    for frames, count in stacks:
        if not frames:
            continue
        for frame in set(frames):
            out["inclusive"][frame] += count
        out["self"][frames[-1]] += count
        owners = (component(frame) for frame in reversed(frames))
        owner = next((name for name in owners if name != GENERIC), GENERIC)
        out["component"][owner] += count
        out["caller"][f"{_our_caller(frames)}\t{owner}"] += count
    return out


def _our_caller(frames: list[str]) -> str:
    """The module of ours nearest the innermost frame: who asked for the
    work (the server's start-up when none)."""
    for frame in reversed(frames):
        path = frame.rpartition(" (")[2]
        if "gptmini_graphql/" in path and "__main__" not in path:
            return "gptmini_graphql/" + path.split("gptmini_graphql/")[1].rstrip(")")
    return "(none of ours)"


def by_caller(counter: Counter[str], total: int, ms: float) -> list[str]:
    """Per module of ours, what its work costs and which components did it."""
    modules: Counter[str] = Counter()
    inside: dict[str, Counter[str]] = {}
    for key, count in counter.items():
        module, _, name = key.partition("\t")
        modules[module] += count
        inside.setdefault(module, Counter())[name] += count
    lines = []
    for module, count in modules.most_common(20):
        parts = ", ".join(
            f"{name} {n / count:.0%}" for name, n in inside[module].most_common(4)
        )
        lines.append(
            f"| {count / total:.1%} | {count / total * ms:.3f} | `{module}` | {parts} |"
        )
    return lines


def report(raw: Path, cpu_ms_per_request: float | None, top: int = 25) -> str:
    stacks, idle = read(raw)
    total = sum(count for _, count in stacks) or 1
    counts = tallies(stacks)
    ms = cpu_ms_per_request or 0.0
    # The frames every request passes through (uvicorn, the middleware, the
    # endpoint) would fill the inclusive list: named once, in call order.
    trunk_frames = {f for f, n in counts["inclusive"].items() if n >= TRUNK * total}
    order: dict[str, int] = {}
    for frames, _ in stacks:
        for depth, frame in enumerate(frames):
            if frame in trunk_frames:
                order[frame] = min(order.get(frame, depth), depth)
    trunk = [_short(f).split(" (")[0] for f in sorted(order, key=order.__getitem__)]
    below = Counter(
        {f: n for f, n in counts["inclusive"].items() if f not in trunk_frames}
    )

    def rows(counter: Counter[str], n: int, with_component: bool) -> list[str]:
        lines = []
        for rank, (name, count) in enumerate(counter.most_common(n), 1):
            share = count / total
            cells = [str(rank), f"{share:.1%}", f"{share * ms:.3f}"]
            if with_component:
                cells += [component(name), f"`{_short(name)}`"]
            else:
                cells.append(name)
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    header_f = "| # | samples | ms/req | component | function |\n|---|---|---|---|---|"
    header_c = "| # | samples | ms/req | component |\n|---|---|---|---|"
    sections = [
        f"{total} samples on CPU ({idle} of an idle thread-pool wait left "
        f"out); ms/req = share x {ms:.3f} ms CPU per request.",
        "",
        "Components (self time; a generic helper's charged to its caller's):",
        header_c,
        *rows(counts["component"], 40, False),
        "",
        "By the module of ours that asked for the work (the innermost frame of "
        "ours on the stack), and the components that did it:",
        "| samples | ms/req | module | components |",
        "|---|---|---|---|",
        *by_caller(counts["caller"], total, ms),
        "",
        f"Top {top} functions by self time:",
        header_f,
        *rows(counts["self"], top, True),
        "",
        f"Top {top} functions by inclusive time, below the trunk (the frames on "
        f"{TRUNK:.0%} of the samples or more: {' > '.join(trunk) or 'none'}):",
        header_f,
        *rows(below, top, True),
    ]
    return "\n".join(sections) + "\n"


def _short(frame: str) -> str:
    """function (path) with the path from its package on."""
    name, _, path = frame.rpartition(" (")
    path = path.rstrip(")").split("site-packages/")[-1]
    path = re.sub(r"^.*?/(gptmini_graphql|bench)/", r"\1/", path)
    return f"{name} ({path})"


if __name__ == "__main__":
    arguments = sys.argv[1:]
    cpu = float(arguments[1]) if len(arguments) > 1 else None
    print(report(Path(arguments[0]), cpu))
