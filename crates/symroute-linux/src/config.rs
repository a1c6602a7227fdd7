//! Reading a config file without trusting the path: opened without blocking
//! (a FIFO or a device must not hang the command), checked to be a regular
//! file of at most [`MAX_CONFIG_BYTES`] before a byte is read, and read with
//! that cap even if the file grows meanwhile.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The largest config file read: far above any real one (a few hundred
/// bytes), far below what could hurt.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not a regular file ({kind})")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("config file {path} is larger than {cap} KiB", cap = MAX_CONFIG_BYTES / 1024)]
    TooLarge { path: PathBuf },
    #[error("config file {path} is not UTF-8 text")]
    NotText { path: PathBuf },
}

impl ConfigError {
    /// Whether the file simply does not exist (a default path may be absent).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ConfigError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The text of config file `path`, bounded as the module says.
pub fn read_config(path: &Path) -> Result<String, ConfigError> {
    let open_err = |source| ConfigError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if !meta.file_type().is_file() {
        return Err(ConfigError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(meta.file_type()),
        });
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(open_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|_| ConfigError::NotText {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_big_files_are_refused_without_reading() {
        let e = read_config(Path::new("/dev/zero")).unwrap_err();
        assert!(
            e.to_string()
                .contains("/dev/zero is not a regular file (a character device)"),
            "{e}"
        );
        let e = read_config(Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let dir = std::env::temp_dir().join(format!("symroute-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; 1024 * 1024]).unwrap();
        let e = read_config(&big).unwrap_err();
        assert!(e.to_string().contains("is larger than 256 KiB"), "{e}");
        let fine = dir.join("fine.toml");
        std::fs::write(&fine, "priority = 1234\n").unwrap();
        assert_eq!(read_config(&fine).unwrap(), "priority = 1234\n");
        assert!(read_config(&dir.join("absent")).unwrap_err().is_not_found());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
