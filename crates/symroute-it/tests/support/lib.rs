//! symroute's root-only integration suites (`tests/`) and benchmarks
//! (`benches/`), run by `scripts/test`; this library is what they share:
//! [`common`] (running the binaries, dumps, the Docker and engine labs) and
//! [`cni_harness`] (a CNI runtime in miniature). Never published.

pub mod cni_harness;
pub mod common;
