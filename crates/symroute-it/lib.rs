//! Root-only integration suites and benchmarks live in `tests/` and `benches/`.
