"""What a single server guarantees, checked against the replicas together.

A check is an async function of the `Run` returning an `Outcome`; `CHECKS`
runs them in order (the one that kills a replica last). Adding a check is
adding a function to that list; budgets and the usage ledger have theirs in
spend.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter

from clustercheck import spend
from clustercheck.client import Reply
from clustercheck.run import (
    CREATE_KEY,
    ME,
    REVOKE_KEY,
    SUMMARIZE,
    Check,
    Load,
    Outcome,
    Run,
)


async def user_made_on_one_logs_in_on_every_other(run: Run) -> Outcome:
    username = await run.new_user(replica=0)
    seen = []
    for replica in range(1, run.client.replicas):
        token = await run.login(username, username * 2, replica)
        # And the token one replica signed is good on the next.
        other = (replica + 1) % run.client.replicas
        me = await run.client.post(ME, token=token, replica=other)
        seen.append(me.data["me"]["username"] == username)
    return Outcome(
        "a user created on one replica logs in on the others",
        all(seen),
        f"created on api0; logged in on api1..api{run.client.replicas - 1}, "
        "each token accepted by the next replica",
    )


async def one_rate_limit(run: Run) -> Outcome:
    limit = run.cluster.options.rate_limit
    username = await run.new_user(replica=0, rate_limit=f"{limit}/hour")
    token = await run.login(username, username * 2, replica=1)
    # Three times the limit, all at once, spread over every replica; distinct
    # texts, so the response cache plays no part.
    replies = await run.client.gather(
        *(
            run.client.post(SUMMARIZE, {"t": f"text {i} {run.nonce()}"}, token=token)
            for i in range(3 * limit)
        )
    )
    admitted = [reply for reply in replies if reply.ok]
    limited = [reply for reply in replies if reply.codes == ["RATE_LIMITED"]]
    other = [reply for reply in replies if not reply.ok and reply not in limited]
    by_replica = Counter(f"api{reply.replica}" for reply in admitted)
    return Outcome(
        "one rate limit across the replicas",
        len(admitted) == limit and not other,
        f"limit {limit}/hour, {len(replies)} concurrent requests: "
        f"{len(admitted)} admitted ({dict(sorted(by_replica.items()))}), "
        f"{len(limited)} RATE_LIMITED, {len(other)} other"
        + (f"; first other: {other[0].describe()}" if other else ""),
    )


async def one_response_cache(run: Run) -> Outcome:
    variables = {"t": f"A text only this run sends: {run.nonce()}."}
    replies = [
        await run.client.post(SUMMARIZE, variables, token=run.admin, replica=replica)
        for replica in range(run.client.replicas)
    ]
    cached = [
        reply.data["summarize"]["cached"] if reply.ok else None for reply in replies
    ]
    return Outcome(
        "one response cache",
        cached == [False] + [True] * (run.client.replicas - 1),
        f"the same summarize on api0, api1, …: cached = {cached}",
    )


async def one_set_of_persisted_queries(run: Run) -> Outcome:
    query = f"query Persisted{run.nonce()} {{ me {{ username }} }}"
    sha = hashlib.sha256(query.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha}}
    registered = await run.client.post(
        query, token=run.admin, replica=0, extensions=extensions
    )
    by_hash = [
        await run.client.post(None, token=run.admin, replica=r, extensions=extensions)
        for r in range(1, run.client.replicas)
    ]
    return Outcome(
        "one set of persisted queries",
        registered.ok and all(reply.ok for reply in by_hash),
        "registered on api0 (APQ); by hash alone on the others: "
        + ", ".join(f"api{r.replica} {'ok' if r.ok else r.codes}" for r in by_hash),
    )


async def revoked_key_refused_everywhere_within_the_bound(run: Run) -> Outcome:
    """Every request sent at least AUTH_CACHE_TTL_SECONDS after the revocation
    returned is refused, on every replica. (A replica may have read the key
    just before the revocation; it may use what it read for the TTL.)"""
    ttl = run.cluster.options.auth_cache_ttl_seconds
    username = await run.new_user(replica=0)
    session = await run.login(username, username * 2, replica=0)
    created = (await run.client.post(CREATE_KEY, {"n": "ck"}, token=session)).data
    key, key_id = (
        created["createApiKey"]["key"],
        created["createApiKey"]["apiKey"]["id"],
    )
    everywhere = range(run.client.replicas)
    primed = [await run.client.post(ME, token=key, replica=r) for r in everywhere]
    revoke = await run.client.post(REVOKE_KEY, {"id": key_id}, token=session, replica=0)
    revoked_at = time.monotonic()
    replies: list[Reply] = []
    while time.monotonic() < revoked_at + ttl + 1.0:  # a second past the bound
        replies += [await run.client.post(ME, token=key, replica=r) for r in everywhere]
        await asyncio.sleep(0.05)
    late = [r for r in replies if r.sent >= revoked_at + ttl]
    wrongly_accepted = [r for r in late if r.codes != ["UNAUTHENTICATED"]]
    accepted = [r for r in replies if r.ok]
    last: dict[str, float | None] = {}
    for i in everywhere:
        times = [r.sent - revoked_at for r in accepted if r.replica == i]
        last[f"api{i}"] = round(max(times), 2) if times else None
    return Outcome(
        f"a revoked key is refused by every replica within {ttl:g} s",
        all(reply.ok for reply in primed)
        and revoke.ok
        and bool(late)
        and not wrongly_accepted,
        f"last acceptance after the revocation, in s (None: none): {last}; "
        f"{len(late)} requests from {ttl:g} s on, {len(wrongly_accepted)} accepted",
    )


async def kill_a_replica_under_load(run: Run) -> Outcome:
    """SIGKILL the last replica a third of the way through; the client keeps
    spreading over all of them, as a client without a balancer would."""
    options = run.cluster.options
    victim = run.client.replicas - 1
    username = await run.new_user(replica=0)
    token = await run.login(username, username * 2, replica=0)
    pending = iter(range(options.load_requests))
    replies: list[Reply] = []
    killed_at: list[float] = []

    async def worker() -> None:
        for i in pending:
            variables = {"t": f"load {i} {run.nonce()}"}
            replies.append(await run.client.post(SUMMARIZE, variables, token=token))
            if not killed_at and len(replies) >= options.load_requests // 3:
                killed_at.append(time.monotonic())
                run.cluster.kill(victim)

    await asyncio.gather(*(worker() for _ in range(options.concurrency)))
    run.load = Load(token, replies, victim, killed_at[0])
    survivors = [r for r in replies if r.replica != victim]
    server_errors = [r for r in replies if r.status is not None and r.status >= 500]
    failed_survivors = [r for r in survivors if not r.ok]
    victim_after = [
        r for r in replies if r.replica == victim and r.sent >= killed_at[0]
    ]
    ready = [await run.client.get("/readyz", r) for r in range(victim)]
    return Outcome(
        "SIGKILL of one replica under load: no 5xx, the others unaffected",
        not server_errors and not failed_survivors and ready == [200] * victim,
        f"{len(replies)} requests at concurrency {options.concurrency}; "
        f"survivors answered {len(survivors) - len(failed_survivors)}/"
        f"{len(survivors)} with data; 5xx anywhere: {len(server_errors)}; "
        f"api{victim} after the kill: "
        f"{sum(r.status is None for r in victim_after)} connections refused or "
        f"cut; survivors' /readyz: {ready}"
        + (f"; first failure: {failed_survivors[0].describe()}" if failed_survivors else ""),
    )  # fmt: skip


CHECKS: list[Check] = [
    user_made_on_one_logs_in_on_every_other,
    one_rate_limit,
    one_response_cache,
    one_set_of_persisted_queries,
    revoked_key_refused_everywhere_within_the_bound,
    spend.one_budget_never_over_spent,
    # It leaves one replica fewer; the ledger check then looks at what it sent.
    kill_a_replica_under_load,
    spend.every_answer_has_its_ledger_row,
]
