//! The Kubernetes packaging, checked with symroute's own decoder: the
//! NetworkAttachmentDefinition's CNI configuration list chains symroute
//! after macvlan, and symroute's entry (as Multus hands it to the plugin,
//! with the list's cniVersion and name) decodes and passes symroute's
//! checks. The schemas themselves are checked by scripts/validate-manifests.

use std::path::Path;

use serde_json::Value;
use symroute_cni::types;

fn manifest(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join("deploy/kubernetes")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The literal block under `config: |` (indented lines after it).
fn config_block(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "config: |").skip(1);
    let first = lines.next().expect("config block");
    let indent = first.len() - first.trim_start().len();
    let mut out = String::from(first.trim_start());
    for l in lines {
        if !l.trim().is_empty() && l.len() - l.trim_start().len() < indent {
            break;
        }
        out.push('\n');
        out.push_str(l.get(indent..).unwrap_or(""));
    }
    out
}

#[test]
fn network_attachment_definition_chains_a_valid_symroute_entry() {
    let list: Value = serde_json::from_str(&config_block(&manifest(
        "network-attachment-definition.yaml",
    )))
    .expect("spec.config is JSON");
    let plugins = list["plugins"].as_array().expect("plugins");
    assert_eq!(plugins[0]["type"], "macvlan");
    let last = plugins.last().expect("a plugin");
    assert_eq!(last["type"], "symroute");
    let mut conf = last.clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    let d = types::decode(conf.to_string().as_bytes()).expect("symroute's entry decodes");
    assert_eq!(d.options.table, None);
    assert!(types::SUPPORTED_VERSIONS.contains(&d.conf.cni_version.as_str()));
}

#[test]
fn daemonset_installs_into_opt_cni_bin_and_checks_the_copy() {
    let ds = manifest("symroute-cni-daemonset.yaml");
    assert!(ds.contains("path: /opt/cni/bin"));
    assert!(ds.contains("mountPath: /host/opt/cni/bin"));
    // `symroute install-cni` does the atomic copy and the VERSION check
    // (crates/symroute/src/commands/install_cni.rs).
    assert!(ds.contains(r#"command: ["/usr/local/bin/symroute"]"#));
    assert!(
        ds.contains(r#"args: ["install-cni", "--cni-bin-dir", "/host/opt/cni/bin", "--wait"]"#)
    );
    // The image is deploy/docker/Dockerfile's (scripts/build-image): it
    // carries the plugin the DaemonSet installs.
    let image = manifest("../docker/Dockerfile");
    assert!(image.contains("COPY symroute symroute-cni /usr/local/bin/"));
    assert!(image.contains(r#"ENTRYPOINT ["/usr/local/bin/symroute"]"#));
}
