//! `symroute-cni`: the CNI plugin on its own, the binary to install as
//! `/opt/cni/bin/symroute`. The `symroute` command does the same when
//! CNI_COMMAND is set; this one links only the plugin's code, so a runtime
//! that runs it on every ADD and DEL pays less time and memory for each
//! (docs/benchmarks.md, "CNI plugin").
//!
//! `no_main`: the C `main` calls the plugin directly, skipping the Rust
//! runtime's start-up work (stack guard discovery through /proc/self/maps,
//! signal handler set-up), a measurable share of a run that lasts about a
//! millisecond. A panic cannot unwind out of it: the plugin catches panics
//! and answers with an error object (code 100).
#![no_main]

#[unsafe(no_mangle)]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    std::ffi::c_int::from(symroute_cni::main_from_process())
}
