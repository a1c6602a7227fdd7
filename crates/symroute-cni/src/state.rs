//! What symroute remembers per attachment.
//!
//! State: one small JSON file per attachment,
//! `<dataDir>/<network name>/<containerID>:<ifname>.json`, written after a
//! successful ADD (atomically: a temporary file renamed over it) and removed
//! by DEL and GC. It lets DEL work without prevResult or after the interface
//! is gone, and GC find attachments the runtime no longer has. The kernel's
//! protocol tag stays the truth of what symroute owns; the file only says
//! which of those objects belong to which attachment, and with which tag
//! (DEL and GC clean with the recorded protocol, whatever the configuration
//! says by then; a record written before the field existed means 115, the
//! tag those versions used).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CniError, code};

/// What one ADD made, for DEL and GC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentState {
    /// The network's name ("" when the configuration had none).
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    /// The interface's index when ADD ran (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<u32>,
    /// CNI_NETNS as given.
    pub netns: PathBuf,
    /// (device, inode) of the namespace: a path can be reused by another one.
    pub netns_id: (u64, u64),
    /// The table the interface's rules point at.
    pub table: u32,
    /// Only rules were added (sbr's `table`): the table's routes are not
    /// symroute's.
    pub rules_only: bool,
    /// The addresses the rules were made for.
    pub addrs: Vec<IpAddr>,
    /// The tag ADD wrote; 115 in records of versions before 116 became the
    /// plugin's default (they did not write the field).
    #[serde(default = "legacy_protocol")]
    pub protocol: u8,
    pub priority: u32,
}

/// The tag of records written without a `protocol` field.
pub const LEGACY_PROTOCOL: u8 = 115;

fn legacy_protocol() -> u8 {
    LEGACY_PROTOCOL
}

/// The folder of one network's state files.
pub fn network_dir(data_dir: &Path, network: &str) -> PathBuf {
    data_dir.join(if network.is_empty() {
        "_unnamed"
    } else {
        network
    })
}

/// The state file of one attachment.
pub fn state_path(data_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    network_dir(data_dir, network).join(format!("{container_id}:{ifname}.json"))
}

fn io_error(what: String, e: std::io::Error) -> CniError {
    CniError::with_details(code::IO, what, e.to_string())
}

/// Read a state file; None when it does not exist.
pub fn load(path: &Path) -> Result<Option<AttachmentState>, CniError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CniError::with_details(
                code::IO,
                format!("state file {} is damaged", path.display()),
                e.to_string(),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(format!("read state file {}", path.display()), e)),
    }
}

/// Write a state file atomically.
pub fn save(path: &Path, state: &AttachmentState) -> Result<(), CniError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = match std::fs::File::create(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                std::fs::File::create(&tmp)?
            }
            other => other?,
        };
        let mut text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        text.push(b'\n');
        f.write_all(&text)?;
        // No fsync: the state describes namespaces, which do not outlive a
        // reboot either; a torn file is reported and DEL goes on without it.
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(format!("write state file {}", path.display()), e)
    })
}

/// Remove a state file; a missing one is fine.
pub fn remove(path: &Path) -> Result<(), CniError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(format!("remove state file {}", path.display()), e)),
    }
}

/// A state file and what it holds (or why it could not be read).
pub type Listed = (PathBuf, Result<AttachmentState, CniError>);

/// Every state file of every network under `data_dir`.
pub fn list_all(data_dir: &Path) -> Result<Vec<Listed>, CniError> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(io_error(
                format!("list state folder {}", data_dir.display()),
                e,
            ));
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(format!("list {}", data_dir.display()), e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(list_dir(&entry.path())?);
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every state file of one network.
pub fn list(data_dir: &Path, network: &str) -> Result<Vec<Listed>, CniError> {
    list_dir(&network_dir(data_dir, network))
}

fn list_dir(dir: &Path) -> Result<Vec<Listed>, CniError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(format!("list state folder {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(format!("list {}", dir.display()), e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let state = load(&path).and_then(|s| {
            s.ok_or_else(|| CniError::new(code::IO, format!("{} vanished", path.display())))
        });
        out.push((path, state));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
