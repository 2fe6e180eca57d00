"""Persisted queries: Apollo's automatic persisted queries (APQ), or an allowlist.

A client sends `extensions.persistedQuery = {"version": 1, "sha256Hash": H}`
where H is the SHA-256 (lower-case hex) of the query text:

* `apq` (the default): a request with only the hash runs the query stored
  under it, or is answered PERSISTED_QUERY_NOT_FOUND; the client then sends
  the hash and the query together, the server checks that they match, runs the
  query and stores it. The store is an in-memory LRU, backed by the app's
  Redis when REDIS_URL is set (see `PersistedQueries.share_through`) so that
  every replica knows what one of them learned.
* `allowlist`: only the operations listed in a manifest (Apollo's persisted
  query manifest, `PERSISTED_QUERIES_FILE`) run, sent by their id (the hash)
  or in full; nothing can be registered at run time.
* `off`: a request that names a persisted query is refused with
  PERSISTED_QUERY_NOT_SUPPORTED, which tells Apollo Client to stop trying.

The spec's draft `documentId` parameter (`"sha256:<hex>"`) is read as the hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cachetools import LRUCache

from gptmini_graphql.errors import (
    BAD_REQUEST,
    PERSISTED_QUERY_HASH_MISMATCH,
    PERSISTED_QUERY_NOT_ALLOWED,
    PERSISTED_QUERY_NOT_FOUND,
    PERSISTED_QUERY_NOT_SUPPORTED,
)
from gptmini_graphql.shared_redis import RedisUnavailable, SharedRedis

if TYPE_CHECKING:
    from gptmini_graphql.settings import Settings

Mode = Literal["off", "apq", "allowlist"]


MANIFEST_FORMAT = "apollo-persisted-query-manifest"
MEMORY_STORE_MAX_CHARS = 16 * 1024 * 1024
MAX_REGISTERED_CHARS = 16 * 1024
REDIS_KEY_PREFIX = "gptmini:apq:"
REDIS_TTL_SECONDS = 7 * 24 * 3600
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(query: str) -> str:
    # surrogatepass: a lone surrogate (valid JSON, not UTF-8) hashes, matching nothing.
    return hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest()


class PersistedQueryError(Exception):
    """A refusal, with the `extensions.code` the client sees.

    `request_error` ones are GraphQL request errors (the request was well
    formed): 200 with application/json. The others are malformed requests:
    400 whatever the media type.
    """

    def __init__(self, code: str, message: str, *, request_error: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_error = request_error


def _not_found() -> PersistedQueryError:
    # Apollo's clients look for this exact message, or for the code.
    return PersistedQueryError(PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")


def _bad_request(message: str) -> PersistedQueryError:
    return PersistedQueryError(BAD_REQUEST, message, request_error=False)


@dataclass(frozen=True, slots=True)
class Resolved:
    """The query to run, and the hash to store it under once it proved valid."""

    query: str | None
    register: str | None = None


class MemoryStore:
    """An LRU of query texts by hash, bounded in count and in total length:
    each entry weighs its length, and at least a `max_entries`-th of the
    whole, so short ones cannot make the count grow without end."""

    def __init__(
        self, max_entries: int = 1024, max_chars: int = MEMORY_STORE_MAX_CHARS
    ) -> None:
        least = max_chars / max_entries
        self._queries: LRUCache[str, str] = LRUCache(
            max_chars, getsizeof=lambda query: max(len(query), least)
        )

    async def get(self, sha256: str) -> str | None:
        return self._queries.get(sha256)

    async def set(self, sha256: str, query: str) -> None:
        if len(query) <= self._queries.maxsize:  # longer: not kept at all
            self._queries[sha256] = query


class RedisStore:
    """The app's Redis, shared by every replica, behind a local LRU.

    Redis being unreachable is never an error for the client: a lookup then
    misses (the client sends the query again) and a registration stays local.
    """

    def __init__(
        self,
        redis: SharedRedis,
        local: MemoryStore,
        *,
        ttl_seconds: int = REDIS_TTL_SECONDS,
    ) -> None:
        self.redis = redis
        self.local = local
        self.ttl_seconds = ttl_seconds

    async def get(self, sha256: str) -> str | None:
        query = await self.local.get(sha256)
        if query is not None:
            return query
        client = self.redis.client
        try:
            stored = await self.redis.call(
                lambda: client.get(REDIS_KEY_PREFIX + sha256)
            )
        except RedisUnavailable:
            return None
        if not isinstance(stored, bytes):
            return None
        query = stored.decode("utf-8", "surrogatepass")
        await self.local.set(sha256, query)
        return query

    async def set(self, sha256: str, query: str) -> None:
        await self.local.set(sha256, query)
        client, text = self.redis.client, query.encode("utf-8", "surrogatepass")
        # Unreachable: kept locally; the outage is logged where Redis is.
        with contextlib.suppress(RedisUnavailable):
            await self.redis.call(
                lambda: client.set(REDIS_KEY_PREFIX + sha256, text, ex=self.ttl_seconds)
            )


Store = MemoryStore | RedisStore


class Allowlist:
    """The operations of an Apollo persisted query manifest."""

    def __init__(self, operations: Mapping[str, str]) -> None:
        # By the manifest's id, and by the hash of the text (they are the same
        # for manifests made with the default settings of Apollo's generator).
        self.by_id = dict(operations)
        self.by_hash = {sha256_hex(body): body for body in operations.values()}

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, sha256: str) -> str | None:
        return self.by_id.get(sha256) or self.by_hash.get(sha256)

    @classmethod
    def from_file(cls, path: Path) -> Allowlist:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(
                f"PERSISTED_QUERIES_FILE: cannot read {path}: {error}"
            ) from error
        return cls.from_manifest(manifest, source=str(path))

    @classmethod
    def from_manifest(cls, manifest: Any, *, source: str = "manifest") -> Allowlist:
        def invalid(reason: str) -> ValueError:
            return ValueError(
                f"PERSISTED_QUERIES_FILE: {source} is not an Apollo persisted query "
                f"manifest ({reason})"
            )

        if not isinstance(manifest, dict):
            raise invalid("not a JSON object")
        if manifest.get("format") != MANIFEST_FORMAT:
            raise invalid(f'"format" must be "{MANIFEST_FORMAT}"')
        if manifest.get("version") != 1:
            raise invalid('"version" must be 1')
        entries = manifest.get("operations")
        if not isinstance(entries, list):
            raise invalid('"operations" must be a list')
        operations: dict[str, str] = {}
        for index, entry in enumerate(entries):
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), str)
                and isinstance(entry.get("body"), str)
            ):
                raise invalid(f"operation {index} needs a string id and body")
            operations[entry["id"]] = entry["body"]
        return cls(operations)


class PersistedQueries:
    """What the endpoint asks before it runs anything: which query text?"""

    def __init__(
        self,
        mode: Mode = "apq",
        *,
        store: MemoryStore | None = None,
        allowlist: Allowlist | None = None,
    ) -> None:
        if mode == "allowlist" and allowlist is None:
            raise ValueError("allowlist mode needs an allowlist")
        self.mode = mode
        self.local = store if store is not None else MemoryStore()
        self.store: Store = self.local
        self.allowlist = allowlist if mode == "allowlist" else None

    def share_through(self, redis: SharedRedis | None) -> None:
        """Keep registrations in `redis` too (the app's, while it runs), so
        every replica knows them; None: in this process only."""
        if redis is not None and self.mode == "apq":
            self.store = RedisStore(redis, self.local)
        else:
            self.store = self.local

    @classmethod
    def from_settings(cls, settings: Settings) -> PersistedQueries:
        """Raises ValueError, naming the setting, when the allowlist is unusable."""
        mode = settings.persisted_queries
        if mode == "allowlist":
            if settings.persisted_queries_file is None:
                raise ValueError(
                    "PERSISTED_QUERIES=allowlist needs PERSISTED_QUERIES_FILE, the "
                    "path of an Apollo persisted query manifest."
                )
            return cls(
                mode, allowlist=Allowlist.from_file(settings.persisted_queries_file)
            )
        return cls(mode, store=MemoryStore(max(settings.graphql_cache_size, 1024)))

    async def resolve(
        self,
        query: object,
        extensions: Mapping[str, Any] | None,
        document_id: object = None,
    ) -> Resolved:
        """The query text to run, or PersistedQueryError.

        `query` is what the client sent (a string, or None); parameter types
        other than these are the caller's to refuse.
        """
        sha256 = _requested_hash(extensions, document_id)
        if sha256 is not None and self.mode == "off":
            raise PersistedQueryError(
                PERSISTED_QUERY_NOT_SUPPORTED, "PersistedQueryNotSupported"
            )
        if not isinstance(query, str):
            if sha256 is None:
                return Resolved(None)  # no query at all: the caller's 400
            found = await self._lookup(sha256)
            if found is None:
                raise _not_found()
            return Resolved(found)
        if sha256 is not None and sha256_hex(query) != sha256:
            raise PersistedQueryError(
                PERSISTED_QUERY_HASH_MISMATCH,
                "The persisted query's sha256Hash is not the SHA-256 of its query.",
                request_error=False,
            )
        if self.allowlist is not None:
            if self.allowlist.get(sha256 or sha256_hex(query)) != query:
                raise PersistedQueryError(
                    PERSISTED_QUERY_NOT_ALLOWED,
                    "Only the operations registered in this server's allowlist "
                    "may run.",
                )
            return Resolved(query)
        return Resolved(query, register=sha256)

    async def register(self, sha256: str, query: str) -> None:
        # Real operations are a few kilobytes; a long one is a string literal.
        if self.mode == "apq" and len(query) <= MAX_REGISTERED_CHARS:
            await self.store.set(sha256, query)

    async def _lookup(self, sha256: str) -> str | None:
        if self.allowlist is not None:
            return self.allowlist.get(sha256)
        return await self.store.get(sha256)


def _requested_hash(
    extensions: Mapping[str, Any] | None, document_id: object
) -> str | None:
    """The hash a request names, if it names one; malformed ones are 400s."""
    if document_id is not None:
        if not isinstance(document_id, str) or not document_id.startswith("sha256:"):
            raise _bad_request('"documentId" must be "sha256:" and a SHA-256 in hex.')
        return _checked_hash(document_id.removeprefix("sha256:"))
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict):
        raise _bad_request('"extensions.persistedQuery" must be an object.')
    if persisted.get("version") != 1:
        raise _bad_request("Unsupported persisted query version: only 1 is known.")
    return _checked_hash(persisted.get("sha256Hash"))


def _checked_hash(value: object) -> str:
    if isinstance(value, str) and _SHA256_HEX.match(value.lower()):
        return value.lower()
    raise _bad_request("The persisted query's hash must be a SHA-256 in hex.")
