//! CNI errors: a code from the spec (or symroute's own, 100 and up), a
//! message and details, printed on stdout as the spec's JSON error object.

use serde::Serialize;

/// Error codes of the CNI spec, plus symroute's own (100 and up).
pub mod code {
    /// The config's `cniVersion` is not one symroute speaks, or the command
    /// does not exist in that version (CHECK before 0.4.0, GC before 1.1.0).
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A required environment variable is missing or malformed.
    pub const BAD_ENV: u32 = 4;
    /// Reading or writing a file (state, log) failed.
    pub const IO: u32 = 5;
    /// The standard input is not JSON.
    pub const DECODE: u32 = 6;
    /// The configuration (or its prevResult) is JSON but not valid.
    pub const INVALID_CONFIG: u32 = 7;
    /// Another operation held the namespace's lock too long: try again.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot work on this node now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// A netlink operation failed (everything this run changed was rolled back).
    pub const KERNEL: u32 = 100;
    /// symroute cannot plan the interface's routing (interface missing,
    /// gateway off-link, no free table, a foreign route in the way).
    pub const PLAN: u32 = 101;
    /// CHECK: the interface's rules and routes differ from the plan.
    pub const CHECK_MISMATCH: u32 = 102;
    /// GC or DEL could not remove some of symroute's objects.
    pub const CLEANUP: u32 = 103;
}

/// A failed CNI command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if .details.is_empty() { String::new() } else { format!(": {}", .details) })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's error object, for a request in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_default()
    }
}
