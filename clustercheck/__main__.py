"""python -m clustercheck [--small] [--replicas N] …: start the cluster,
run every check, print one line per check; exit 1 if any failed."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from clustercheck.checks import CHECKS
from clustercheck.client import Client
from clustercheck.cluster import Cluster, Options, start
from clustercheck.run import LOGIN, Outcome, Run

# CI's size: every check in seconds. The load runs long enough (about 2 s on
# 2 busy cores) that the replica killed a third of the way through has
# flushed some of its work first.
SMALL = {"rate_limit": 10, "load_requests": 240, "concurrency": 6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clustercheck", description=__doc__)
    parser.add_argument("--small", action="store_true", help="CI's size")
    for option in fields(Options):
        parser.add_argument(
            f"--{option.name.replace('_', '-')}", type=type(option.default)
        )
    parser.add_argument("--log-dir", type=Path, help="default: a temporary directory")
    args = parser.parse_args(argv)
    redis_url, database_url = (
        os.environ.get("REDIS_URL"),
        os.environ.get("DATABASE_URL"),
    )
    if not redis_url or not (database_url or "").startswith("postgres"):
        parser.error("REDIS_URL and a PostgreSQL DATABASE_URL must be set")
    values: dict = {**(SMALL if args.small else {})}
    for option in fields(Options):
        if (value := getattr(args, option.name, None)) is not None:
            values[option.name] = value
    options = Options(**values)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="gptmini-cluster-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"cluster: {options} (logs in {log_dir})", flush=True)
    outcomes, memory = check(options, redis_url, database_url, log_dir)  # type: ignore[arg-type]
    for outcome in outcomes:
        print(
            f"{'PASS' if outcome.passed else 'FAIL'}  {outcome.name}: {outcome.detail}"
        )
    print(f"resident memory after the run, MiB: {memory}")
    return 0 if all(outcome.passed for outcome in outcomes) else 1


def check(
    options: Options, redis_url: str, database_url: str, log_dir: Path
) -> tuple[list[Outcome], dict[str, float]]:
    """Start the cluster, run every check, stop it all: the outcomes, and the
    surviving replicas' resident memory at the end."""
    cluster = start(options, redis_url, database_url, log_dir)
    try:
        outcomes = asyncio.run(_run_checks(cluster))
        return outcomes, cluster.resident_mb()
    finally:
        cluster.close()


async def _run_checks(cluster: Cluster) -> list[Outcome]:
    client = Client(cluster.urls)
    try:
        login = await client.post(
            LOGIN, {"u": "cluster-admin", "p": cluster.admin_password}
        )
        run = Run(cluster, client, admin=login.data["login"]["accessToken"])
        outcomes = []
        for each in CHECKS:
            try:
                outcomes.append(await each(run))
            except AssertionError as error:  # a step before the verdict failed
                outcomes.append(Outcome(each.__name__, False, f"failed: {error}"))
            print("." if outcomes[-1].passed else "F", end="", flush=True)
        print()
        return outcomes
    finally:
        await client.aclose()


if __name__ == "__main__":
    sys.exit(main())
