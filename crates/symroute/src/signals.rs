//! SIGINT, SIGTERM, SIGHUP (a closed terminal or ssh session) and SIGQUIT
//! while a command changes a namespace: the handlers only set the engine's
//! interrupt flag (and remember which signal came). An apply stops before its
//! next operation and rolls back; a clean finishes (its deletes are
//! idempotent, and stopping halfway would leave rules without routes); the
//! lock wait and the DAD wait give up at once. The command then exits 2
//! saying what happened. The sync commands need no async runtime for this.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context, Result};
use signal_hook_registry::SigId;

/// The signals that would otherwise end the process mid-change.
const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Installed handlers; [`Interrupt::restore_defaults`] (or dropping this)
/// removes them and gives the signals their default action back.
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicI32>,
    ids: Vec<SigId>,
}

/// Route SIGINT, SIGTERM, SIGHUP and SIGQUIT to a fresh interrupt flag.
pub fn install() -> Result<Interrupt> {
    let flag = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicI32::new(0));
    let mut ids = Vec::new();
    for sig in SIGNALS {
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
        name(self.signal.load(Ordering::SeqCst))
    }

    /// Remove the handlers and restore the default actions (so a process
    /// blocked writing to a stalled pipe can still be killed), returning the
    /// signal that came meanwhile, if any.
    pub fn restore_defaults(mut self) -> Option<&'static str> {
        self.unregister();
        self.signal_name()
    }

    fn unregister(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        for id in self.ids.drain(..) {
            signal_hook_registry::unregister(id);
        }
        for sig in SIGNALS {
            // SAFETY: setting a signal's disposition to SIG_DFL; no handler
            // of ours runs after this (they were unregistered above).
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

fn name(sig: i32) -> Option<&'static str> {
    match sig {
        0 => None,
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        libc::SIGHUP => Some("SIGHUP"),
        libc::SIGQUIT => Some("SIGQUIT"),
        _ => Some("a signal"),
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.unregister();
    }
}
