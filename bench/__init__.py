"""Benchmarks: `python -m bench` (or `make bench`) measures the server against a
local fake upstream, and the embedded model against llama.cpp called directly,
and prints a table; numbers go to bench/results/latest.json."""
