//! `symroute demo`: the seed's failure rebuilt in throwaway namespaces.

use std::io::Write;

/// Run the demo, writing its story to `out`.
pub fn run(out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "demo: not yet built")?;
    Ok(())
}
