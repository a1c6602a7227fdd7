//! Records the git commit the binary is built from, for `symroute --version`.
//!
//! Order: `git rev-parse --short=12 HEAD` in this crate's checkout, else the
//! SYMROUTE_GIT_COMMIT environment variable (set it when building from a
//! tarball or in a container without .git), else "unknown". It never fails the
//! build.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn valid(commit: &str) -> bool {
    !commit.is_empty()
        && commit.len() <= 64
        && commit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn main() {
    println!("cargo:rerun-if-env-changed=SYMROUTE_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=GIT_DIR");
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| ".".into(), std::path::PathBuf::from);
    let from_git = git(&dir, &["rev-parse", "--short=12", "HEAD"]);
    if from_git.is_some() {
        // Rebuild when HEAD moves: HEAD itself (checkout) and its reflog
        // (every commit, also in a worktree).
        for p in ["HEAD", "logs/HEAD"] {
            if let Some(path) = git(
                &dir,
                &["rev-parse", "--path-format=absolute", "--git-path", p],
            ) && Path::new(&path).exists()
            {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let commit = from_git
        .or_else(|| std::env::var("SYMROUTE_GIT_COMMIT").ok())
        .map(|c| c.trim().to_string())
        .filter(|c| valid(c))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SYMROUTE_GIT_COMMIT={commit}");
}
