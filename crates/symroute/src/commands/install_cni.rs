//! `symroute install-cni`: put the CNI plugin into a node's CNI binary
//! directory (the DaemonSet's job), so that a kubelet or a runtime never sees
//! a half-written binary.
//!
//! The plugin is written to a hidden temporary file in the same directory,
//! fsynced, made 0755, run once as a runtime would (`CNI_COMMAND=VERSION`),
//! and only then renamed over the final name (rename(2) is atomic within a
//! file system), after which the directory is fsynced. A reader of the final
//! path sees either the previous file or the complete new one. The same
//! content already in place is left alone (no rewrite, same inode).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The request every plugin must answer.
const VERSION_REQUEST: &str = r#"{"cniVersion":"1.1.0"}"#;
/// How long the plugin may take to answer VERSION.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

const EXAMPLES: &str = "In the DaemonSet (the node's /opt/cni/bin mounted at /host/opt/cni/bin):
  symroute install-cni --wait

Examples:
  symroute install-cni --cni-bin-dir /opt/cni/bin
  symroute install-cni --source ./symroute-cni --cni-bin-dir /opt/cni/bin --name symroute";

/// Install the symroute CNI plugin into a CNI binary directory
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct InstallCniArgs {
    /// The plugin binary to install [default: symroute-cni next to this binary]
    #[arg(long, value_name = "PATH")]
    pub source: Option<PathBuf>,
    /// The node's CNI binary directory (as mounted in this container)
    #[arg(long, value_name = "DIR", default_value = "/host/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// File name of the installed plugin: the `type` in network configurations
    #[arg(long, value_name = "NAME", default_value = "symroute")]
    pub name: String,
    /// After installing, stay running until SIGTERM (keeps a DaemonSet pod Ready),
    /// re-installing if the file is removed or changed meanwhile
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how often to check the installed file, e.g. 60s, 5m
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::cli::parse_duration)]
    pub check_interval: Duration,
}

/// What an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// There was no file at the final path.
    Installed,
    /// A different file was there and has been replaced.
    Replaced,
    /// The same content, executable, was already there: nothing written.
    Unchanged,
}

impl Outcome {
    fn verb(self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::Replaced => "replaced",
            Outcome::Unchanged => "already installed, unchanged:",
        }
    }
}

/// The plugin's VERSION answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionAnswer {
    pub cni_version: String,
    pub supported: Vec<String>,
}

/// The `install-cni` command.
pub fn run(args: &InstallCniArgs) -> Result<u8> {
    let source = match &args.source {
        Some(s) => s.clone(),
        None => default_source()?,
    };
    let dest = dest_path(&args.cni_bin_dir, &args.name)?;
    report(&source, &dest, install(&source, &dest)?)?;
    if args.wait {
        wait(&source, &dest, args.check_interval)?;
    }
    Ok(0)
}

fn report(source: &Path, dest: &Path, outcome: Outcome) -> Result<()> {
    let answer = verify(dest)?;
    let size = fs::metadata(dest)
        .with_context(|| format!("reading {}", dest.display()))?
        .len();
    println!(
        "symroute install-cni: {} {} from {} ({size} bytes); it answers VERSION: cniVersion {}, supports {}",
        outcome.verb(),
        dest.display(),
        source.display(),
        answer.cni_version,
        answer.supported.join(", ")
    );
    Ok(())
}

/// `symroute-cni` in the directory of the running binary.
fn default_source() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this binary's path")?;
    let dir = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    Ok(dir.join("symroute-cni"))
}

fn dest_path(dir: &Path, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0') {
        bail!("--name {name:?}: expected a plain file name (the CNI `type`), e.g. symroute");
    }
    let meta =
        fs::metadata(dir).with_context(|| format!("CNI binary directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("CNI binary directory {}: not a directory", dir.display());
    }
    Ok(dir.join(name))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading plugin {}", path.display()))
}

/// Whether `dest` already holds exactly `content`, executable.
fn same_in_place(dest: &Path, content: &[u8]) -> Result<Option<bool>> {
    let meta = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dest.display())),
    };
    if !meta.is_file()
        || meta.len() != content.len() as u64
        || meta.permissions().mode() & 0o777 != 0o755
    {
        return Ok(Some(false));
    }
    let mut f = File::open(dest).with_context(|| format!("opening {}", dest.display()))?;
    let mut buf = Vec::with_capacity(content.len());
    f.read_to_end(&mut buf)
        .with_context(|| format!("reading {}", dest.display()))?;
    Ok(Some(buf == content))
}

/// Removes the temporary file unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn temp_path(dest: &Path, attempt: u32) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    dest.with_file_name(format!(
        ".{name}.install-{}-{nanos}-{attempt}",
        std::process::id()
    ))
}

/// Install `source` as `dest`, atomically; see the module's documentation.
pub fn install(source: &Path, dest: &Path) -> Result<Outcome> {
    let content = read(source)?;
    if content.is_empty() {
        bail!("plugin {}: empty file", source.display());
    }
    let outcome = match same_in_place(dest, &content)? {
        Some(true) => return Ok(Outcome::Unchanged),
        Some(false) => Outcome::Replaced,
        None => Outcome::Installed,
    };
    let dir = dest
        .parent()
        .with_context(|| format!("{} has no parent directory", dest.display()))?;

    // A fresh hidden name in the same directory (same file system, so the
    // rename is atomic); O_EXCL so nothing else's file is ever reused.
    let (mut file, mut tmp) = {
        let mut attempt = 0;
        loop {
            let path = temp_path(dest, attempt);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&path)
            {
                Ok(f) => break (f, TempFile { path, keep: false }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
    };
    file.write_all(&content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.path.display()))?;
    fs::set_permissions(&tmp.path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", tmp.path.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.path.display()))?;
    // Closed before it is run (a file open for writing cannot be executed).
    drop(file);
    // A copy that does not answer as a plugin never reaches the final name.
    verify(&tmp.path).with_context(|| format!("checking the new copy of {}", source.display()))?;
    fs::rename(&tmp.path, dest)
        .with_context(|| format!("renaming {} to {}", tmp.path.display(), dest.display()))?;
    tmp.keep = true;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(outcome)
}

/// Run `path` as a runtime would for VERSION and check its JSON answer.
pub fn verify(path: &Path) -> Result<VersionAnswer> {
    let mut attempt = 0;
    let mut child = loop {
        let spawned = Command::new(path)
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(c) => break c,
            // Another thread of this process may still hold an inherited
            // write descriptor for a moment (fork before exec): retry briefly.
            Err(e) if e.raw_os_error() == Some(libc_etxtbsy()) && attempt < 50 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("running {}", path.display())),
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin may exit without reading: a broken pipe is its business.
        let _ = stdin.write_all(VERSION_REQUEST.as_bytes());
    }
    let start = Instant::now();
    loop {
        if child
            .try_wait()
            .with_context(|| format!("waiting for {}", path.display()))?
            .is_some()
        {
            break;
        }
        if start.elapsed() > VERIFY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{}: no answer to CNI VERSION within {} s",
                path.display(),
                VERIFY_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("reading the answer of {}", path.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{}: CNI VERSION failed ({}): {}{}",
            path.display(),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_version_answer(&stdout).with_context(|| {
        format!(
            "{}: not a CNI plugin's VERSION answer: {:?}",
            path.display(),
            stdout.trim()
        )
    })
}

fn libc_etxtbsy() -> i32 {
    nix::errno::Errno::ETXTBSY as i32
}

fn parse_version_answer(s: &str) -> Result<VersionAnswer> {
    let v: serde_json::Value = serde_json::from_str(s.trim()).context("invalid JSON")?;
    let cni_version = v
        .get("cniVersion")
        .and_then(|x| x.as_str())
        .context("no cniVersion string")?
        .to_string();
    let supported: Vec<String> = v
        .get("supportedVersions")
        .and_then(|x| x.as_array())
        .context("no supportedVersions array")?
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    if supported.is_empty() {
        bail!("supportedVersions is empty");
    }
    Ok(VersionAnswer {
        cni_version,
        supported,
    })
}

/// Stay up until SIGTERM/SIGINT, re-installing when the file goes or changes.
fn wait(source: &Path, dest: &Path, interval: Duration) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        println!(
            "symroute install-cni: waiting (checking {} every {:?}; SIGTERM ends)",
            dest.display(),
            interval
        );
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                () = tokio::time::sleep(interval) => {
                    match install(source, dest) {
                        Ok(Outcome::Unchanged) => {}
                        Ok(o) => report(source, dest, o)?,
                        // Keep the pod up; say why, and try again next time.
                        Err(e) => eprintln!("symroute install-cni: {e:#}"),
                    }
                }
            }
        }
        println!(
            "symroute install-cni: stopping; {} stays installed",
            dest.display()
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A unique temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let p = std::env::temp_dir().join(format!(
                "symroute-install-cni-{tag}-{}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&p).expect("temp dir");
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A shell-script "plugin" that answers VERSION, `pad` bytes long,
    /// with `fill` in its padding so two versions differ everywhere.
    fn plugin(dir: &Path, name: &str, fill: char, pad: usize) -> (PathBuf, Vec<u8>) {
        let mut s = String::from(
            "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}'\nexit 0\n",
        );
        let line: String = std::iter::repeat_n(fill, 79).collect();
        while s.len() < pad {
            s.push('#');
            s.push_str(&line);
            s.push('\n');
        }
        let p = dir.join(name);
        fs::write(&p, &s).expect("write plugin");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        (p, s.into_bytes())
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .expect("read dir")
            .filter_map(std::result::Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn installs_then_leaves_the_same_content_alone() {
        let src = TempDir::new("src");
        let bin = TempDir::new("bin");
        let (source, bytes) = plugin(&src.0, "symroute-cni", 'a', 4096);
        let dest = dest_path(&bin.0, "symroute").expect("dest");
        assert_eq!(install(&source, &dest).expect("first"), Outcome::Installed);
        assert_eq!(fs::read(&dest).expect("read"), bytes);
        let before = fs::metadata(&dest).expect("stat");
        assert_eq!(before.permissions().mode() & 0o777, 0o755);

        assert_eq!(install(&source, &dest).expect("second"), Outcome::Unchanged);
        let after = fs::metadata(&dest).expect("stat");
        assert_eq!(after.ino(), before.ino(), "no rewrite: same inode");
        assert_eq!(
            (after.mtime(), after.mtime_nsec()),
            (before.mtime(), before.mtime_nsec()),
            "no rewrite: same mtime"
        );
        assert!(leftovers(&bin.0).is_empty(), "{:?}", leftovers(&bin.0));
        let answer = verify(&dest).expect("verify");
        assert_eq!(answer.cni_version, "1.1.0");
        assert_eq!(answer.supported, vec!["1.0.0", "1.1.0"]);
    }

    #[test]
    fn replaces_an_older_binary() {
        let src = TempDir::new("src");
        let bin = TempDir::new("bin");
        let (old, _) = plugin(&src.0, "old", 'o', 2048);
        let (new, new_bytes) = plugin(&src.0, "new", 'n', 8192);
        let dest = bin.0.join("symroute");
        assert_eq!(install(&old, &dest).expect("old"), Outcome::Installed);
        let old_ino = fs::metadata(&dest).expect("stat").ino();
        assert_eq!(install(&new, &dest).expect("new"), Outcome::Replaced);
        assert_eq!(fs::read(&dest).expect("read"), new_bytes);
        assert_ne!(fs::metadata(&dest).expect("stat").ino(), old_ino);
        // Same content but not executable: replaced too.
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(install(&new, &dest).expect("again"), Outcome::Replaced);
        assert_eq!(
            fs::metadata(&dest).expect("stat").permissions().mode() & 0o777,
            0o755
        );
        assert!(leftovers(&bin.0).is_empty(), "{:?}", leftovers(&bin.0));
    }

    #[test]
    fn a_copy_that_does_not_answer_version_never_reaches_the_final_name() {
        let src = TempDir::new("src");
        let bin = TempDir::new("bin");
        let (good, good_bytes) = plugin(&src.0, "good", 'g', 1024);
        let bad = src.0.join("bad");
        fs::write(&bad, "#!/bin/sh\necho 'not json'\n").expect("write");
        let dest = bin.0.join("symroute");
        install(&good, &dest).expect("good");
        let err = format!("{:#}", install(&bad, &dest).expect_err("bad must fail"));
        assert!(err.contains("not a CNI plugin's VERSION answer"), "{err}");
        assert_eq!(
            fs::read(&dest).expect("read"),
            good_bytes,
            "old binary stays"
        );
        assert!(leftovers(&bin.0).is_empty(), "{:?}", leftovers(&bin.0));
        let failing = src.0.join("failing");
        fs::write(&failing, "#!/bin/sh\nexit 3\n").expect("write");
        let err = format!("{:#}", install(&failing, &dest).expect_err("must fail"));
        assert!(err.contains("CNI VERSION failed"), "{err}");
        let missing = format!(
            "{:#}",
            install(&src.0.join("nope"), &dest).expect_err("missing")
        );
        assert!(missing.contains("nope"), "{missing}");
        assert_eq!(fs::read(&dest).expect("read"), good_bytes);
    }

    #[test]
    fn a_reader_never_sees_a_partial_file() {
        let src = TempDir::new("src");
        let bin = TempDir::new("bin");
        // Large enough that a plain copy would be seen half-written.
        let (a, a_bytes) = plugin(&src.0, "a", 'a', 2 << 20);
        let (b, b_bytes) = plugin(&src.0, "b", 'b', (2 << 20) + 4096);
        let dest = bin.0.join("symroute");
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (dest, stop) = (dest.clone(), stop.clone());
            let (a_bytes, b_bytes) = (a_bytes.clone(), b_bytes.clone());
            std::thread::spawn(move || {
                let (mut absent, mut whole) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match fs::read(&dest) {
                        Ok(got) => {
                            assert!(
                                got == a_bytes || got == b_bytes,
                                "partial or foreign file at the final path: {} bytes",
                                got.len()
                            );
                            whole += 1;
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => absent += 1,
                        Err(e) => panic!("reading {}: {e}", dest.display()),
                    }
                }
                (absent, whole)
            })
        };
        for i in 0..30 {
            let from = if i % 2 == 0 { &a } else { &b };
            let want = if i == 0 {
                Outcome::Installed
            } else {
                Outcome::Replaced
            };
            assert_eq!(install(from, &dest).expect("install"), want);
        }
        stop.store(true, Ordering::Relaxed);
        let (_absent, whole) = reader.join().expect("reader saw only whole files");
        assert!(whole > 0, "the reader never read the installed file");
        assert!(leftovers(&bin.0).is_empty(), "{:?}", leftovers(&bin.0));
    }

    #[test]
    fn refuses_names_that_are_not_plain_file_names() {
        let bin = TempDir::new("bin");
        for bad in ["", ".hidden", "a/b", "../x"] {
            assert!(dest_path(&bin.0, bad).is_err(), "{bad:?}");
        }
        let err = format!(
            "{:#}",
            dest_path(&bin.0.join("missing"), "symroute").expect_err("missing dir")
        );
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn parses_version_answers() {
        let ok =
            parse_version_answer(r#"{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.1.0"]}"#)
                .expect("ok");
        assert_eq!(ok.supported, vec!["0.4.0", "1.1.0"]);
        assert!(parse_version_answer(r#"{"cniVersion":"1.1.0"}"#).is_err());
        assert!(parse_version_answer(r#"{"cniVersion":"1.1.0","supportedVersions":[]}"#).is_err());
        assert!(parse_version_answer("hello").is_err());
    }
}
