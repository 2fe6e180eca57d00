"""Proof that N replicas behave as one: `make cluster-check`.

Three API processes (plain `serve` processes, not containers) share one Redis
and one PostgreSQL database; the client spreads requests across them (nothing
balances in between); the LLM is one more process, a fake OpenAI-compatible
upstream (bench/fake_upstream.py). Each check in `checks.py`
asks something a single server would guarantee and verifies that the three
together guarantee it too; the last one SIGKILLs a replica under load.

    REDIS_URL=redis://… DATABASE_URL=postgresql://… python -m clustercheck

A fresh database is created on DATABASE_URL's server for the run and dropped
after it; nothing is deleted from Redis (every key the run makes is new).
"""
