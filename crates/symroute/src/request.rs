//! From the command line to a plan request: which namespace (a path, a
//! process, or a Docker container resolved through the Engine API) and which
//! gateways (Docker's, by MAC, overridden by `--gateway` for the same
//! interface and family).

use anyhow::Result;

use crate::cli::{DockerArgs, TargetArgs};
use crate::commands::runtime;
use symroute_core::kernel::Kernel;
use symroute_core::plan::GatewayHint;
use symroute_docker::model::NetworkMode;
use symroute_docker::{self as dock, DockerClient};
use symroute_linux::kernel::NetlinkKernel;
use symroute_linux::target::Target;

/// A resolved target: the namespace, and for a container what Docker says.
pub struct Resolved {
    pub target: Target,
    pub container: Option<dock::ContainerInfo>,
}

pub fn resolve(t: &TargetArgs, docker: &DockerArgs) -> Result<Resolved> {
    if let Some(p) = &t.netns {
        return Ok(Resolved {
            target: Target::Netns(p.clone()),
            container: None,
        });
    }
    if let Some(pid) = t.pid {
        return Ok(Resolved {
            target: Target::Pid(pid),
            container: None,
        });
    }
    let Some(name) = &t.container else {
        anyhow::bail!("no target: give --netns, --pid or --container");
    };
    let rt = runtime()?;
    let info = rt.block_on(async {
        let client = DockerClient::connect(docker.docker_host.as_deref()).await?;
        let mut info = client.inspect(name).await?;
        // container:<owner> shares the owner's namespace: work on the owner.
        if let NetworkMode::Container(owner) = &info.mode {
            info = client.inspect(owner).await?;
        }
        Ok::<_, dock::DockerError>(info)
    })?;
    match info.mode {
        NetworkMode::Host => anyhow::bail!(
            "container {}: network mode host: it uses the host's own namespace, which symroute never changes",
            info.label()
        ),
        NetworkMode::None => anyhow::bail!("container {}: network mode none", info.label()),
        _ => {}
    }
    let Some(pid) = info.pid.filter(|_| info.running) else {
        anyhow::bail!("container {} is not running", info.label());
    };
    Ok(Resolved {
        target: Target::Pid(pid),
        container: Some(info),
    })
}

/// Gateways for the plan: Docker's (by MAC) for a container, then the
/// command line's, which win for the same interface and family.
pub fn merge_gateways(
    resolved: &Resolved,
    kernel: &mut NetlinkKernel,
    given: Vec<GatewayHint>,
) -> Result<Vec<GatewayHint>> {
    let Some(info) = &resolved.container else {
        return Ok(given);
    };
    let snap = kernel.snapshot()?;
    let (req, warnings) = dock::plan_request(info, &snap);
    for w in warnings {
        eprintln!(
            "symroute: warning: {}",
            symroute_core::render::escape(&w.to_string())
        );
    }
    // The command line's --gateway wins over what Docker reports.
    Ok(symroute_core::request::merge_given(given, req.gateways))
}
