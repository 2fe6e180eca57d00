"""What the spend tests share: the usage query, and reading the ledger."""

from __future__ import annotations

from typing import Any

from tests.conftest import API

USAGE = """
query Usage($by: UsageGroup!) {
  me {
    usage {
      requests cachedAnswers promptTokens completionTokens cachedTokens costUsd
      breakdown(by: $by) { key requests promptTokens completionTokens costUsd }
    }
  }
}
"""


def usage(api: API, token: str, by: str = "FIELD") -> dict[str, Any]:
    result = api.post(USAGE, {"by": by}, token=token)
    assert "errors" not in result, result
    return result["data"]["me"]["usage"]


def by_key(report: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {line["key"]: line for line in report["breakdown"]}


SET_BUDGETS = """
mutation Set($username: String!, $budgets: BudgetsInput!) {
  setBudgets(username: $username, budgets: $budgets) {
    budgets { usdPerDay usdPerMonth tokensPerDay tokensPerMonth tokensPerMinute }
  }
}
"""
