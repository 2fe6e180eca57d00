"""Budgets and the usage ledger, across the replicas (see the README's
"Budgets and usage"): one budget is never over-spent, and every answered
call has its ledger row (a SIGKILLed replica may lose its last second's)."""

from __future__ import annotations

import asyncio

from clustercheck.run import SUMMARIZE, Outcome, Run

SET_BUDGETS = """mutation($u: String!, $b: BudgetsInput!) {
  setBudgets(username: $u, budgets: $b) { username } }"""
USAGE = "query { me { usage { requests promptTokens completionTokens } } }"
# Rows are written in batches every second: wait this long for a flush.
LEDGER_FLUSH_WAIT_SECONDS = 2.5
# What the README says a crash may lose: the rows of its last second.
CRASH_LOSS_SECONDS = 1.0


async def usage(run: Run, token: str, replica: int = 0) -> dict[str, int]:
    return (await run.client.post(USAGE, token=token, replica=replica)).data["me"][
        "usage"
    ]


async def one_budget_never_over_spent(run: Run) -> Outcome:
    budget = run.cluster.options.budget_tokens
    username = await run.new_user(replica=0)
    variables = {"u": username, "b": {"tokensPerDay": budget}}
    (await run.client.post(SET_BUDGETS, variables, token=run.admin)).data  # noqa: B018
    token = await run.login(username, username * 2, replica=1)
    sent = 3 * run.cluster.options.rate_limit
    replies = await run.client.gather(
        *(
            run.client.post(SUMMARIZE, {"t": f"spend {i} {run.nonce()}"}, token=token)
            for i in range(sent)
        )
    )
    admitted = sum(reply.ok for reply in replies)
    refused = sum(reply.codes == ["BUDGET_EXCEEDED"] for reply in replies)
    await asyncio.sleep(LEDGER_FLUSH_WAIT_SECONDS)
    spent = await usage(run, token)
    tokens = spent["promptTokens"] + spent["completionTokens"]
    return Outcome(
        "one budget across the replicas, never over-spent",
        admitted >= 1
        and admitted + refused == sent
        and tokens <= budget
        and spent["requests"] == admitted,
        f"{budget} tokens a day, {sent} concurrent requests: {admitted} answered, "
        f"{refused} BUDGET_EXCEEDED; the ledger: {spent['requests']} calls, "
        f"{tokens} tokens",
    )


async def every_answer_has_its_ledger_row(run: Run) -> Outcome:
    """After the kill: the load's user's ledger against its answers."""
    load = run.load
    assert load is not None, "runs after kill_a_replica_under_load"
    await asyncio.sleep(LEDGER_FLUSH_WAIT_SECONDS)
    rows = (await usage(run, load.token))["requests"]
    survivors = sum(r.ok for r in load.replies if r.replica != load.victim)
    victim = [r for r in load.replies if r.replica == load.victim and r.ok]
    # Answers the victim gave more than a second before it died were flushed.
    flushed = sum(r.received < load.killed_at - CRASH_LOSS_SECONDS for r in victim)
    return Outcome(
        "every answer has its ledger row (a killed replica: all but its last second's)",
        survivors + flushed <= rows <= len(load.replies),
        f"{survivors} answers from the survivors, {len(victim)} from api"
        f"{load.victim} before its SIGKILL ({flushed} of them over "
        f"{CRASH_LOSS_SECONDS:g} s before it); ledger rows: {rows}",
    )
