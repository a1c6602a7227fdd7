//! SIGINT and SIGTERM during an apply: the handlers only set the engine's
//! interrupt flag (and remember which signal came); the engine stops before
//! its next operation and rolls back, and the command exits 2 saying so.
//! The sync commands need no async runtime for this.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context, Result};
use signal_hook_registry::SigId;

/// Installed handlers; dropping this removes them (the signals are then
/// ignored for the little that is left of the process, never half-handled).
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicI32>,
    ids: Vec<SigId>,
}

/// Route SIGINT and SIGTERM to a fresh interrupt flag.
pub fn install() -> Result<Interrupt> {
    let flag = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicI32::new(0));
    let mut ids = Vec::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let (f, s) = (flag.clone(), signal.clone());
        // SAFETY: the action only stores to atomics, which is
        // async-signal-safe; it allocates nothing and takes no lock.
        let id = unsafe {
            signal_hook_registry::register(sig, move || {
                let _ = s.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
                f.store(true, Ordering::SeqCst);
            })
        }
        .with_context(|| format!("installing a handler for signal {sig}"))?;
        ids.push(id);
    }
    Ok(Interrupt { flag, signal, ids })
}

impl Interrupt {
    /// The flag for [`symroute_core::engine::ApplyOptions::interrupt`].
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// The first signal that came, by name.
    pub fn signal_name(&self) -> Option<&'static str> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            libc::SIGINT => Some("SIGINT"),
            libc::SIGTERM => Some("SIGTERM"),
            _ => Some("a signal"),
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}
