"""Load tests and benchmarks (`loadtests/bench`, `loadtests/bench_native.py`)."""
