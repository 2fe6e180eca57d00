"""Answer quality of the embedded model, measured through the public GraphQL
API on labelled sets kept in `eval/data/`, against the same model prompted
naively in the same run: `make eval` (or `python -m eval`).

A benchmark, not a test: it prints numbers and asserts nothing. The test
suite runs a few items of each set to catch a broken pipeline.
"""
