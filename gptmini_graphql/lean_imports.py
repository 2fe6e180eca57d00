"""Keeping a library's optional extras out of a serving process.

redis-py (8.x) imports OpenTelemetry's metrics SDK, and with it psutil,
whenever they are installed (ours is, for tracing), for metrics of its own
that are off until an application calls
`redis.observability.get_observability_instance().init(...)`, which we never
do (our Redis metrics are Prometheus', shared_redis.py). That import is
2.2 MB resident in every process with REDIS_URL. redis-py guards it with
`except ImportError` ("OTel SDK may not be installed"), so making it fail
while redis is imported gives a client that is the same except for that
feature; the module stays importable for everyone after.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

# What redis-py's observability imports only if it can (providers.py).
REDIS_OPTIONAL = "opentelemetry.sdk.metrics"


@contextmanager
def unimportable(name: str) -> Iterator[None]:
    """Within the block, `import name` raises ImportError, unless the module
    is loaded already (then nothing changes: whoever loaded it keeps it)."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None  # type: ignore[assignment]  # Python's "not importable"
    try:
        yield
    finally:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
