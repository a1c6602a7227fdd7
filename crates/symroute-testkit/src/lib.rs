//! Test support, never part of a shipped API: a kernel-faithful fake of the
//! core's `Kernel` seam, builders of hand-written snapshots (`snap`), and
//! real-namespace lab fixtures (anonymous namespaces held by file
//! descriptors, veths, bridges, TCP probes).

pub mod fake;
pub mod lab;
pub mod snap;

use std::path::PathBuf;

/// A binary of the workspace (`symroute`, `symroute-cni`), from the same
/// target folder and profile as the running test or benchmark
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`). Integration
/// suites live in their own crate, so Cargo's `CARGO_BIN_EXE_*` does not
/// reach them; `scripts/test` builds the binaries first.
///
/// # Panics
/// When the binary is missing: the message says how to build it.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test binary");
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("test binary sits in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace's binaries for this profile first \
         (cargo build --release --workspace --bins, as scripts/test does)",
        bin.display()
    );
    bin
}
