"""Locust: simulated users of the API, each logging in once and then sending
the four tasks in the mix of workload.py, a second or two apart.

    locust -f loadtest/locustfile.py --host https://api.example.com
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 \\
        --headless --users 50 --spawn-rate 10 --run-time 2m

LOADTEST_USERNAME and LOADTEST_PASSWORD name the account (test_user / 1234
by default). Every simulated user is that one user, so the server's
RATE_LIMIT applies to them all together: raise it on the server under test,
or expect RATE_LIMITED failures. Each request is named after its task in
Locust's statistics; an answer with GraphQL errors is a failure named by its
error code.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from locust import HttpUser, between, events, task
from locust.exception import StopUser

# Locust puts this file's folder on the import path.
from workload import LOGIN, TASKS, WEIGHTS, Request, problem

LOGIN_ATTEMPTS = 3
_cached = {"answers": 0, "cached": 0}


class APIUser(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.rng = random.Random()  # noqa: S311 - a traffic mix, not a secret
        self.token = self._login()

    def _login(self) -> str:
        credentials = {
            "username": os.environ.get("LOADTEST_USERNAME", "test_user"),
            "password": os.environ.get("LOADTEST_PASSWORD", "1234"),
        }
        for attempt in range(LOGIN_ATTEMPTS):
            with self.client.post(
                "/graphql",
                json={"query": LOGIN, "variables": credentials},
                name="login",
                catch_response=True,
            ) as response:
                body = _json(response)
                login = Request("login", LOGIN)
                if (code := problem(login, response.status_code, body)) is None:
                    return body["data"]["login"]["accessToken"]
                response.failure(code)
            if code != "RATE_LIMITED" or attempt + 1 == LOGIN_ATTEMPTS:
                break
            error = body["errors"][0].get("extensions", {})
            time.sleep(min(float(error.get("retryAfter") or 1), 10))
        raise StopUser()

    def _send(self, request: Request) -> None:
        with self.client.post(
            "/graphql",
            json=request.body(),
            headers={"Authorization": f"Bearer {self.token}"},
            name=request.field,
            catch_response=True,
        ) as response:
            body = _json(response)
            if (code := problem(request, response.status_code, body)) is not None:
                response.failure(code)
                return
            _cached["answers"] += 1
            _cached["cached"] += bool(body["data"][request.field].get("cached"))

    @task(WEIGHTS["summarize"])
    def summarize(self) -> None:
        self._send(TASKS["summarize"](self.rng))

    @task(WEIGHTS["translate"])
    def translate(self) -> None:
        self._send(TASKS["translate"](self.rng))

    @task(WEIGHTS["analyze"])
    def analyze(self) -> None:
        self._send(TASKS["analyze"](self.rng))

    @task(WEIGHTS["complete"])
    def complete(self) -> None:
        self._send(TASKS["complete"](self.rng))


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@events.quitting.add_listener
def _report_cache(environment: Any, **kwargs: Any) -> None:
    answers, cached = _cached["answers"], _cached["cached"]
    if answers:
        print(
            f"Answers served from the response cache: {cached} of {answers} "
            f"({cached / answers:.0%})"
        )
