"""Spend under control: budgets and token limits (reserved before a model
call, settled after it), and the usage ledger (one row per call).

    budgets.py       which budgets bind a caller, their periods and units
    reservations.py  the atomic reserve / settle store: memory, or Redis (Lua)
    ledger.py        the ledger's rows, written off the request path in batches
    worst_case.py    the most a call can cost, known before it is made
    enforcement.py   reserving that against the budgets, refusing, settling
    meter.py         one model call's accounting: reserve, settle, ledger row
    usage.py         the ledger summed for the schema and the CLI
"""
