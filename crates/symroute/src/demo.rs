//! `symroute demo`: the seed's failure rebuilt in throwaway namespaces, then
//! diagnosed, fixed and cleaned, with a real TCP connection at each step.
//!
//! The namespaces are anonymous (held only by this process's file
//! descriptors), so they vanish with the process on every path: success,
//! error, Ctrl-C or kill.

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use symroute_core::diagnose::diagnose;
use symroute_core::engine::{self, ApplyOptions, EngineError};
use symroute_core::kernel::{Kernel, KernelError};
use symroute_core::model::RT_TABLE_MAIN;
use symroute_core::plan::{GatewayHint, PlanRequest};
use symroute_core::render;
use symroute_core::report;
use symroute_core::settings::Settings;
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::netns::NetnsError;
use symroute_testkit::lab::{LabError, SeedLab, SeedOptions, iptables_available};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("symroute demo builds network namespaces and must run as root (sudo symroute demo)")]
    NotRoot,
    #[error("demo lab: {0}")]
    Lab(#[from] LabError),
    #[error("demo: {0}")]
    Netns(#[from] NetnsError),
    #[error("demo: {0}")]
    Kernel(#[from] KernelError),
    #[error("demo: {0}")]
    Engine(#[from] EngineError),
    #[error("demo: writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("demo: {0}")]
    Unexpected(String),
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn step(out: &mut dyn Write, title: &str) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "== {title}")?;
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

fn connect(out: &mut dyn Write, lab: &SeedLab, expect_ok: bool) -> Result<bool, DemoError> {
    let target = lab.client_target();
    writeln!(out, "   client$ connect {target}")?;
    let ok = match lab.probe(PROBE_TIMEOUT) {
        Ok(text) => {
            writeln!(out, "   -> connected, server says: {}", text.trim())?;
            true
        }
        Err(e) => {
            writeln!(out, "   -> FAILED: {e}")?;
            false
        }
    };
    if ok != expect_ok {
        writeln!(
            out,
            "   (unexpected: this machine did not behave like the seed's)"
        )?;
    }
    Ok(ok)
}

/// Run the demo, writing its story to `out`.
pub fn run(out: &mut dyn Write) -> Result<(), DemoError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DemoError::NotRoot);
    }
    let dnat = iptables_available();
    writeln!(
        out,
        "symroute demo: a container on two Docker networks (front-tier, back-tier), rebuilt in throwaway network namespaces."
    )?;
    writeln!(
        out,
        "   client 192.0.2.10 --- 192.0.2.98 docker-like host (strict rp_filter)\n\
         \x20                           |- br-front 172.18.0.1/16 (front-tier) -- eth1 172.18.0.2 container\n\
         \x20                           `- br-back  172.19.0.1/16 (back-tier)  -- eth0 172.19.0.4 container"
    )?;
    if dnat {
        writeln!(
            out,
            "   The host publishes port 5000 with DNAT to the container's front-tier address 172.18.0.2:80."
        )?;
    } else {
        writeln!(
            out,
            "   iptables is not installed, so the host routes the client straight to 172.18.0.2:80 (no NAT)."
        )?;
    }
    let lab = SeedLab::build(SeedOptions { dnat, ipv6: false })?;
    let ctr = lab.ctr.netns();
    let label = "the container";
    let mut kernel = NetlinkKernel::new(ctr.socket()?);

    step(
        out,
        "1. The container's main table: one default route, on back-tier",
    )?;
    let snap = kernel.snapshot()?;
    for r in snap
        .routes
        .iter()
        .filter(|r| r.table == RT_TABLE_MAIN && r.family() == symroute_core::model::Family::V4)
    {
        writeln!(out, "   {}", render::route_show(r, Some(&snap)))?;
    }
    writeln!(
        out,
        "   Docker gives the default route to the network whose name sorts first: back-tier < front-tier."
    )?;

    step(
        out,
        "2. symroute diagnose: which way would each reply leave?",
    )?;
    let d = diagnose(&mut kernel, "symroute apply --netns <container>")?;
    out.write_all(indent(&report::diagnose_text(&d)).as_bytes())?;

    step(
        out,
        "3. A real TCP connection from the client, before the fix",
    )?;
    connect(out, &lab, false)?;
    writeln!(
        out,
        "   The SYN arrives on eth1 (front-tier); the SYN-ACK leaves by eth0 (back-tier), and the host's\n\
         \x20  strict reverse-path filter drops it: 172.18.0.2 does not belong behind br-back."
    )?;

    step(
        out,
        "4. symroute apply --gateway eth1=172.18.0.1 (from the host: no privileged container)",
    )?;
    let gw: IpAddr = "172.18.0.1"
        .parse()
        .map_err(|_| DemoError::Unexpected("gateway address".into()))?;
    let opts = ApplyOptions {
        settings: Settings::default(),
        request: PlanRequest {
            gateways: vec![GatewayHint {
                ifname: "eth1".into(),
                gateway: gw,
            }],
            ..PlanRequest::default()
        },
        ..ApplyOptions::default()
    };
    let rep = engine::apply(&mut kernel, &opts)?;
    out.write_all(indent(&report::apply_text(&rep, label)).as_bytes())?;

    step(out, "5. symroute diagnose, after")?;
    let d = diagnose(&mut kernel, "symroute apply --netns <container>")?;
    out.write_all(indent(&report::diagnose_text(&d)).as_bytes())?;

    step(out, "6. The same TCP connection, after the fix")?;
    let fixed = connect(out, &lab, true)?;

    step(
        out,
        "7. symroute clean: remove exactly what symroute tagged, nothing else",
    )?;
    let c = engine::clean(&mut kernel, &Settings::default())?;
    out.write_all(indent(&report::clean_text(&c, label)).as_bytes())?;
    connect(out, &lab, false)?;

    step(out, "Done")?;
    drop(kernel);
    drop(lab);
    writeln!(out, "   The demo's namespaces are gone with it.")?;
    if !fixed {
        return Err(DemoError::Unexpected(
            "the connection still failed after apply".into(),
        ));
    }
    Ok(())
}
