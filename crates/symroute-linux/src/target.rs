//! Opening the namespace a command works on.

use std::path::PathBuf;

use crate::kernel::NetlinkKernel;
use crate::netns::{Netns, NetnsError};

/// A namespace named by path or by a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Netns(PathBuf),
    Pid(u32),
}

impl Target {
    /// How the target is named on the command line (`--netns PATH`), the
    /// path shell-quoted.
    pub fn as_args(&self) -> String {
        match self {
            Target::Netns(p) => format!(
                "--netns {}",
                symroute_core::render::shell_quote(&p.display().to_string())
            ),
            Target::Pid(p) => format!("--pid {p}"),
        }
    }

    /// The namespace file.
    pub fn path(&self) -> PathBuf {
        match self {
            Target::Netns(p) => p.clone(),
            Target::Pid(p) => PathBuf::from(format!("/proc/{p}/ns/net")),
        }
    }
}

/// An opened target: the namespace and a kernel adapter bound to it.
pub struct Opened {
    pub netns: Netns,
    pub kernel: NetlinkKernel,
}

/// Open `target`; with `for_change`, refuse the host's namespace unless
/// `allow_host`.
pub fn open(target: &Target, for_change: bool, allow_host: bool) -> Result<Opened, NetnsError> {
    let netns = Netns::open(target.path())?;
    if for_change && !allow_host {
        netns.refuse_host()?;
    }
    let sock = netns.socket()?;
    Ok(Opened {
        netns,
        kernel: NetlinkKernel::new(sock),
    })
}
