"""`make cluster-check` at CI's size: three API processes sharing Redis and
PostgreSQL behave as one server (see clustercheck/checks.py for each check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clustercheck.__main__ import SMALL, check
from clustercheck.checks import CHECKS
from clustercheck.cluster import Options
from tests.conftest import postgres_url, redis_url

needs_stores = pytest.mark.skipif(
    redis_url() is None or postgres_url() is None,
    reason="needs REDIS_URL and a PostgreSQL DATABASE_URL (the replicas share them)",
)


@needs_stores
def test_three_replicas_behave_as_one(tmp_path: Path) -> None:
    outcomes, _ = check(Options(**SMALL), redis_url(), postgres_url(), tmp_path)
    failed = [f"{o.name}: {o.detail}" for o in outcomes if not o.passed]
    assert not failed, "\n".join(failed) + f"\n(logs in {tmp_path})"
    assert len(outcomes) == len(CHECKS)  # every check ran


def test_the_check_says_what_it_needs(monkeypatch, capsys) -> None:
    from clustercheck.__main__ import main

    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(SystemExit) as exit_:
        main(["--small"])
    assert exit_.value.code == 2
    assert "REDIS_URL and a PostgreSQL DATABASE_URL" in capsys.readouterr().err
