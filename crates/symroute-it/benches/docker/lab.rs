//! The engine under test, one of four, behind one face: Debian's dockerd 20.10
//! ([`DockerLab`], as the Docker suites run it), Docker 28 from the sid root, Podman 4.3
//! (the host's) and Podman 5.8 (the sid root's), the last three as [`EngineLab`] runs them:
//! in a lab network namespace and a private mount namespace of their own. Everything goes
//! through the Engine API on the lab's socket (Podman's Engine-compatible one).
//!
//! Where each engine mounts its containers' network namespaces (the rule watcher follows
//! that folder, [`BenchLab::netns_dirs`]):
//!
//! - dockerd 20.10: `<exec-root>/netns/<sandbox id>` (the lab's folder, the host's mount
//!   namespace);
//! - Docker 28: the same under its exec root, but the bind mounts are made in the lab's
//!   mount namespace, inside the sid root's overlay (whose `/tmp` is the host's `/tmp`):
//!   the file appears in the lab's folder as seen from here, the namespace only through
//!   `/proc/<holder>/root/<lab>/rootfs/<lab>/exec/netns/`;
//! - Podman (rootful, netavark): `/run/netns/netns-<uuid>` of its own mount namespace:
//!   `/proc/<holder>/root/run/netns/` for 4.3 (the lab's tmpfs `/run`), and
//!   `/proc/<holder>/root/<lab>/rootfs/run/netns/` for 5.8 (the sid root's tmpfs `/run`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::docker::{DOCKER, DockerLab, api};
use crate::engines::{Engine, EngineLab, docker_cli};
use symroute_testkit::lab::Ns;

/// `--engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Docker20,
    Other(Engine),
}

impl Which {
    pub fn parse(s: &str) -> Option<Which> {
        Some(match s {
            "docker20" => Which::Docker20,
            "docker28" => Which::Other(Engine::Docker28),
            "podman43" => Which::Other(Engine::Podman43),
            "podman58" => Which::Other(Engine::Podman58),
            _ => return None,
        })
    }
}

enum Inner {
    Docker20(Box<DockerLab>),
    Other(Box<EngineLab>),
}

/// One running engine and what the benchmark needs of it.
pub struct BenchLab {
    inner: Inner,
    image: String,
}

impl BenchLab {
    pub fn start(which: Which) -> BenchLab {
        match which {
            Which::Docker20 => {
                let lab = DockerLab::start();
                let image = lab.image().to_string();
                BenchLab {
                    inner: Inner::Docker20(Box::new(lab)),
                    image,
                }
            }
            Which::Other(engine) => {
                let ns = Ns::new(format!("bench-{}", engine.name()))
                    .unwrap_or_else(|e| panic!("lab namespace: {e}"));
                let mut lab = EngineLab::start(engine, ns);
                let image = lab.image();
                BenchLab {
                    inner: Inner::Other(Box::new(lab)),
                    image,
                }
            }
        }
    }

    pub fn ns(&self) -> &Ns {
        match &self.inner {
            Inner::Docker20(l) => l.ns(),
            Inner::Other(l) => l.ns(),
        }
    }

    pub fn dir(&self) -> &Path {
        match &self.inner {
            Inner::Docker20(l) => l.dir(),
            Inner::Other(l) => l.dir(),
        }
    }

    pub fn socket(&self) -> PathBuf {
        match &self.inner {
            Inner::Docker20(l) => l.socket_path(),
            Inner::Other(l) => l.socket_path(),
        }
    }

    /// `unix://<socket>`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The docker CLI that speaks to this engine (the baseline script's).
    pub fn docker_cli(&self) -> &'static str {
        match &self.inner {
            Inner::Docker20(_) => DOCKER,
            Inner::Other(_) => docker_cli(),
        }
    }

    /// "dockerd 20.10.24 (API 1.41)", "Podman Engine 5.8.6 (API 1.41)"...
    pub fn version(&self) -> String {
        let v: Value = serde_json::from_str(&api::ok(&self.socket(), "GET", "/version", None))
            .unwrap_or_default();
        let name = v["Components"][0]["Name"].as_str().unwrap_or("engine");
        format!(
            "{name} {} (API {})",
            v["Version"].as_str().unwrap_or("?"),
            v["ApiVersion"].as_str().unwrap_or("?")
        )
    }

    pub fn network_create(&self, name: &str, subnet: &str, gateway: &str) {
        let body = json!({
            "Name": name,
            "Driver": "bridge",
            "IPAM": { "Config": [ { "Subnet": subnet, "Gateway": gateway } ] },
        });
        api::ok(&self.socket(), "POST", "/networks/create", Some(&body));
    }

    /// Create a sleeping container on `first`, connected to `second` while created (both
    /// exist when it starts): its id. Podman's containers get the lab's cgroup parent and
    /// the ulimits it can set here (lab recipe F), as [`EngineLab::run_server`] gives them.
    pub fn create_two(&self, name: &str, first: &str, second: &str) -> String {
        let socket = self.socket();
        let mut host_config = json!({ "NetworkMode": first });
        if let Inner::Other(l) = &self.inner
            && l.engine.is_podman()
        {
            host_config["CgroupParent"] = json!(l.cgroup_parent());
            host_config["Ulimits"] = json!([
                { "Name": "nofile", "Soft": 1024, "Hard": 1024 },
                { "Name": "nproc", "Soft": 1024, "Hard": 1024 },
            ]);
        }
        let created = api::ok(
            &socket,
            "POST",
            &format!("/containers/create?name={name}"),
            Some(&json!({
                "Image": self.image,
                "Cmd": ["/bin/sleep", "3600"],
                "HostConfig": host_config,
                "NetworkingConfig": { "EndpointsConfig": { first: {} } },
            })),
        );
        let id = serde_json::from_str::<Value>(&created)
            .ok()
            .and_then(|v| v["Id"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("create {name}: no Id in {created}"));
        api::ok(
            &socket,
            "POST",
            &format!("/networks/{second}/connect"),
            Some(&json!({ "Container": id })),
        );
        id
    }

    /// Where the engine's namespace files appear (watched with inotify) and where they
    /// are opened from (as namespaces): see the module documentation.
    pub fn netns_dirs(&self) -> (PathBuf, PathBuf) {
        match &self.inner {
            Inner::Docker20(l) => {
                let d = l.dir().join("exec/netns");
                (d.clone(), d)
            }
            Inner::Other(l) => {
                let mnt = PathBuf::from(format!("/proc/{}/root", l.holder_pid()));
                let rootfs = l.dir().join("rootfs");
                let under = |root: &Path, p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
                match l.engine {
                    Engine::Docker28 => {
                        let exec = l.dir().join("exec/netns");
                        let open = under(&under(&mnt, &rootfs), &exec);
                        (exec, open)
                    }
                    Engine::Podman43 | Engine::Podman43Cni => {
                        let d = mnt.join("run/netns");
                        (d.clone(), d)
                    }
                    Engine::Podman58 => {
                        let d = under(&mnt, &rootfs).join("run/netns");
                        (d.clone(), d)
                    }
                }
            }
        }
    }
}
