"""Load tests: `make loadtest` (see __main__.py), or Locust's own command
against any server: `locust -f loadtest/locustfile.py --host URL`."""
