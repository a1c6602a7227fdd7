//! `symroute diagnose`: which way each reply would leave, for one namespace
//! or every running Docker container.

use anyhow::{Context, Result};

use super::{EXIT_FINDING, EXIT_OK, print_json, runtime};
use crate::cli::{DiagnoseArgs, DockerArgs};
use crate::request::resolve;
use symroute_core::{diagnose, report};
use symroute_docker::{self as dock, DockerClient};
use symroute_linux::target;

pub fn run(a: DiagnoseArgs) -> Result<u8> {
    let single = a.target.single().filter(|t| t.container.is_none());
    let Some(t) = single else {
        return docker(a.target.container.as_deref(), &a.docker_args, a.json);
    };
    let t = resolve(&t, &a.docker_args)?.target;
    let mut opened = target::open(&t, false, true)?;
    let fix = format!("symroute apply {}", t.as_args());
    let d = diagnose::diagnose(&mut opened.kernel, &fix)
        .with_context(|| format!("diagnose {}", t.path().display()))?;
    if a.json {
        print_json(&d)?;
    } else {
        print!("{}", report::diagnose_text(&d));
    }
    Ok(if d.symmetric { EXIT_OK } else { EXIT_FINDING })
}

/// `diagnose --docker` (every running container) or `--container NAME`.
fn docker(name: Option<&str>, docker: &DockerArgs, json: bool) -> Result<u8> {
    let rt = runtime()?;
    let results = rt.block_on(async {
        let client = DockerClient::connect(docker.docker_host.as_deref()).await?;
        let ids = match name {
            Some(n) => vec![n.to_string()],
            None => client.running().await?,
        };
        let mut out = Vec::new();
        for id in ids {
            match dock::diagnose::diagnose_container(&client, &id).await {
                Ok(d) => out.push(d),
                // Gone between list and inspect: not an error of --docker.
                Err(dock::DockerError::NoSuchContainer(_)) if name.is_none() => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<_, dock::DockerError>(out)
    })?;
    if json {
        print_json(&results)?;
    } else if results.is_empty() {
        println!("no running containers");
    } else {
        let texts: Vec<String> = results.iter().map(dock::diagnose::text).collect();
        print!("{}", texts.join("\n"));
    }
    Ok(if results.iter().all(|d| d.symmetric) {
        EXIT_OK
    } else {
        EXIT_FINDING
    })
}
