"""What an upstream serves: `GET /models`, at start and for `/readyz`.

Many OpenAI-compatible servers answer any model name and echo it back
(llama-cpp-python's does), so a wrong `OPENAI_MODEL` is silent: answers come
from whatever the server runs, reported and priced as the configured model.
The list the server gives is the evidence we have; what it shows becomes
warnings in the log and in `/readyz`, never a refusal to serve (a proxy or an
Azure deployment may serve a name it does not list, and a list that could not
be fetched says nothing of the chat endpoint).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gptmini_graphql.llm.pricing import find_price
from gptmini_graphql.llm.upstream import Upstream
from gptmini_graphql.llm.upstream_errors import APIError, APIStatusError
from gptmini_graphql.settings import ModelPrice

logger = logging.getLogger("gptmini_graphql.llm")

# A /readyz probe must answer quickly even while the upstream hangs.
PROBE_TIMEOUT_SECONDS = 2.0
SHOWN_MODELS = 5
MODEL_SETTINGS = {"primary": "OPENAI_MODEL", "fallback": "LLM_FALLBACK_MODEL"}


@dataclass(frozen=True, slots=True)
class ModelsReport:
    upstream: str
    model: str
    served: tuple[str, ...] | None  # None: the list could not be had
    error: str | None = None

    @property
    def listed(self) -> bool | None:
        if self.served is None:
            return None
        # Ollama lists `llama3.1:latest` for a model asked for as `llama3.1`.
        return self.model in self.served or f"{self.model}:latest" in self.served

    def warnings(self, prices: dict[str, ModelPrice]) -> list[str]:
        if self.listed is not False:
            return []
        assert self.served is not None
        shown = ", ".join(self.served[:SHOWN_MODELS]) or "none"
        if len(self.served) > SHOWN_MODELS:
            shown += ", …"
        warning = (
            f"{self.upstream}: the model server does not list the configured "
            f"model {self.model!r} (it lists {len(self.served)}: {shown}); it may "
            "refuse requests, or answer with another model"
        )
        if _charged(find_price(self.model, prices)):
            warning += f" that is then reported and priced as {self.model}"
        return [warning + "."]

    def as_json(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "name": self.upstream,
            "model": self.model,
            "listed": self.listed,
        }
        if self.served is not None:
            detail["served"] = list(self.served[:SHOWN_MODELS])
            detail["servedCount"] = len(self.served)
        if self.error is not None:
            detail["error"] = self.error
        return detail


class ModelsProbe:
    """One upstream's model list, asked for again once `max_age` has passed."""

    def __init__(self, upstream: Upstream, *, max_age: float) -> None:
        self.upstream = upstream
        self.max_age = max_age
        self._report: ModelsReport | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()  # concurrent /readyz calls share one request

    async def report(self) -> ModelsReport:
        async with self._lock:
            now = time.monotonic()
            if self._report is None or now - self._checked_at >= self.max_age:
                self._report = await self._ask()
                self._checked_at = time.monotonic()
            return self._report

    async def _ask(self) -> ModelsReport:
        upstream = self.upstream
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                listing = await upstream.client.models(within=PROBE_TIMEOUT_SECONDS)
        except TimeoutError:
            return self._failed(f"no answer within {PROBE_TIMEOUT_SECONDS:g} s")
        except APIStatusError as exc:
            return self._failed(f"HTTP {exc.status_code}")
        except APIError as exc:
            return self._failed(type(exc).__name__)
        except ValueError:  # a body labelled JSON that is not (a proxy's page)
            return self._failed("not JSON")
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            return self._failed("not an OpenAI model list")
        served = tuple(
            item["id"]
            for item in data
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        )
        return ModelsReport(upstream.name, upstream.model, served)

    def _failed(self, error: str) -> ModelsReport:
        return ModelsReport(self.upstream.name, self.upstream.model, None, error)


class UpstreamProbes:
    """Every remote upstream's probe: what start-up logs and /readyz shows."""

    def __init__(
        self, probes: list[ModelsProbe], prices: dict[str, ModelPrice]
    ) -> None:
        self.probes = probes
        self.prices = prices

    async def log_at_start(self) -> None:
        for probe in self.probes:
            url = without_credentials(str(probe.upstream.client.base_url))
            for warning in price_warnings(probe.upstream, self.prices):
                logger.warning(warning, extra={"url": url})
        for probe, report in zip(self.probes, await self._reports(), strict=True):
            url = without_credentials(str(probe.upstream.client.base_url))
            log_report(report, url, self.prices)

    async def status(self) -> dict[str, Any]:
        """For /readyz: what each upstream serves, and what looks wrong."""
        if not self.probes:
            return {}
        reports = await self._reports()
        warnings = [
            warning
            for probe, report in zip(self.probes, reports, strict=True)
            for warning in price_warnings(probe.upstream, self.prices)
            + report.warnings(self.prices)
        ]
        return {
            "upstreams": [report.as_json() for report in reports],
            "warnings": warnings,
        }

    async def _reports(self) -> list[ModelsReport]:
        return list(await asyncio.gather(*(probe.report() for probe in self.probes)))


def log_report(report: ModelsReport, url: str, prices: dict[str, ModelPrice]) -> None:
    extra = {"upstream": report.upstream, "url": url, "model": report.model}
    if report.served is None:
        logger.warning(
            "could not list the upstream's models",
            extra={**extra, "error": report.error},
        )
        return
    logger.info(
        "upstream models",
        extra={
            **extra,
            "served": list(report.served[:SHOWN_MODELS]),
            "served_count": len(report.served),
            "listed": report.listed,
        },
    )
    for warning in report.warnings(prices):
        logger.warning(warning)


def price_warnings(upstream: Upstream, prices: dict[str, ModelPrice]) -> list[str]:
    """A provider's price applied where that provider cannot be: the cost
    users see would be an invention."""
    price = find_price(upstream.model, prices)
    url = without_credentials(str(upstream.client.base_url))
    if not _charged(price) or not is_local_address(url):
        return []
    assert price is not None
    return [
        # No URL here: /readyz shows these, and internal addresses stay in the log.
        f"{upstream.name}: MODEL_PRICES prices {upstream.model} at "
        f"${price.input:g} / ${price.output:g} per 1M tokens, but its base URL "
        "is a local address, unlikely to charge that: the cost users see may be "
        f"wrong. Set {MODEL_SETTINGS.get(upstream.name, 'the model setting')} "
        "to the model it serves, or price that at 0 in MODEL_PRICES."
    ]


def _charged(price: ModelPrice | None) -> bool:
    return price is not None and (price.input > 0 or price.output > 0)


def is_local_address(url: str) -> bool:
    """Loopback, a private network, or a name only this machine resolves."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith((".localhost", ".local")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def without_credentials(url: str) -> str:
    """A base URL may carry a user and password; logs and warnings get neither."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
