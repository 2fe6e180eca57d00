"""Passwords: Argon2id hashes, verified off the event loop.

Login costs the same whether or not the user exists: an unknown user is
checked against a dummy hash (see `verify`).
"""

from __future__ import annotations

import asyncio
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gptmini_graphql.errors import BadUserInput

# Argon2id with OWASP's parameters (m=19 MiB, t=2, p=1): about 40 ms of one
# core here. argon2-cffi's default (64 MiB, p=4) took 440 ms of both cores: a
# login flood would starve the API. A hash records its parameters, so these
# can change later without breaking stored ones.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

MIN_LENGTH = 8
MAX_LENGTH = 1024  # hashing is linear in length: no megabyte passwords


@cache
def _dummy_hash() -> str:
    return _hasher.hash("not anyone's password")


def check_new(password: str) -> None:
    """A password fit to be set (the seed's FAKE_PASSWORD is exempt)."""
    if len(password) < MIN_LENGTH:
        raise BadUserInput(f"A password needs at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise BadUserInput(f"A password has at most {MAX_LENGTH} characters.")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify(password_hash: str | None, password: str) -> bool:
    """Constant work: with no user (None) or an over-long password, a dummy
    hash is verified instead and the answer is no."""
    usable = password_hash is not None and len(password) <= MAX_LENGTH
    candidate = password if len(password) <= MAX_LENGTH else ""
    checked = password_hash if password_hash is not None and usable else _dummy_hash()
    try:
        await asyncio.to_thread(_hasher.verify, checked, candidate)
    except (VerificationError, InvalidHashError):
        return False
    return usable
