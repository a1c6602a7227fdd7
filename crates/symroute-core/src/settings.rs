//! Tunables: the routing-table band, the rule priority and the protocol tag,
//! with their defaults and the config file that can change them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Protocol, RT_TABLE_LOCAL, ReservedProtocol, Table};

/// First table of the default band. 10000-10999 is clear of every band in
/// common use: reserved tables (0, 252-255), Calico (1-250), sbr (100 up),
/// Cilium (200-202, 2004, 2005), Tailscale (52), wg-quick (51820) and
/// NetworkManager's WireGuard tables (51820-52319).
pub const DEFAULT_TABLE_MIN: u32 = 10000;
/// Last table of the default band.
pub const DEFAULT_TABLE_MAX: u32 = 10999;
/// Rule priority: after local (0) and the priorities of Cilium (1-112),
/// Calico (99), the AWS VPC CNI (512-1536); before Tailscale (5210-5270),
/// NetworkManager's WireGuard (~30768-31766), wg-quick (32764-32765) and main
/// (32766), so a reply from a managed address is decided by its own table.
pub const DEFAULT_PRIORITY: u32 = 3000;
/// Protocol tag on every rule and route the host writer makes (`proto 115`).
/// Unassigned in the kernel's rtnetlink.h and iproute2's rt_protos, and not
/// used by FRR (186-192), BIRD (12), Calico (80) or babel (42).
pub const DEFAULT_PROTOCOL: Protocol = Protocol::HOST;

/// Default config file, read when present.
pub const DEFAULT_CONFIG: &str = "/etc/symroute/config.toml";

/// What symroute uses to place and recognise its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// First table number symroute may use (inclusive).
    pub table_min: u32,
    /// Last table number symroute may use (inclusive).
    pub table_max: u32,
    /// Priority of every `from <address>` rule.
    pub priority: u32,
    /// Protocol number tagging every rule and route symroute owns.
    pub protocol: Protocol,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            table_min: DEFAULT_TABLE_MIN,
            table_max: DEFAULT_TABLE_MAX,
            priority: DEFAULT_PRIORITY,
            protocol: DEFAULT_PROTOCOL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("table band {0}: expected START-END, e.g. 10000-10999")]
    BandSyntax(String),
    #[error(transparent)]
    Protocol(#[from] ReservedProtocol),
    #[error("table band {min}-{max} includes reserved table {table} (the kernel's {reason})")]
    ReservedTableInBand {
        min: u32,
        max: u32,
        table: u32,
        reason: &'static str,
    },
    #[error(
        "rule priority {0} must be between 1 and 32765 (0 is local's, 32766 main's, 32767 default's; later ones come after main)"
    )]
    Priority(u32),
    #[error("{0}")]
    Invalid(String),
}

/// The config file's form; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// "START-END"
    pub table_band: Option<String>,
    pub priority: Option<u32>,
    pub protocol: Option<u8>,
}

/// Parse a band written "START-END".
pub fn parse_band(s: &str) -> Result<(u32, u32), SettingsError> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| SettingsError::BandSyntax(s.into()))?;
    let a: u32 = a
        .trim()
        .parse()
        .map_err(|_| SettingsError::BandSyntax(s.into()))?;
    let b: u32 = b
        .trim()
        .parse()
        .map_err(|_| SettingsError::BandSyntax(s.into()))?;
    Ok((a, b))
}

impl Settings {
    /// Check the values are usable: a band of real, unreserved tables, a
    /// priority that is neither `local`'s nor past `main`'s, a protocol that is
    /// not one of the kernel's own.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.table_min > self.table_max {
            return Err(SettingsError::Invalid(format!(
                "table band {}-{} is empty",
                self.table_min, self.table_max
            )));
        }
        // Reserved tables are 0 and 252-255 (the one rule of
        // `Table::reserved`): only the part of a band up to 255 can hold one.
        if let Some(table) = (self.table_min..=self.table_max.min(RT_TABLE_LOCAL))
            .find(|t| Table::reserved(*t).is_some())
        {
            return Err(SettingsError::ReservedTableInBand {
                min: self.table_min,
                max: self.table_max,
                table,
                reason: Table::reserved(table).unwrap_or("reserved"),
            });
        }
        if self.priority == 0 || self.priority >= 32766 {
            return Err(SettingsError::Priority(self.priority));
        }
        Protocol::new(self.protocol.get())?;
        Ok(())
    }

    /// Settings from the defaults overlaid with a config file. An explicit
    /// `path` must exist; without one, [`DEFAULT_CONFIG`] is read when present.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(s),
            Err(source) => return Err(SettingsError::Read { path, source }),
        };
        s = Settings::from_config_text(&text, &path)?;
        Ok(s)
    }

    /// Settings from the defaults overlaid with the text of config file
    /// `path` (already read, e.g. by a reader that bounds its size), checked.
    pub fn from_config_text(text: &str, path: &Path) -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        let cfg: ConfigFile = toml::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        s.overlay(&cfg).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        s.validate().map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(s)
    }

    /// Apply the keys a config file (or the command line) sets.
    pub fn overlay(&mut self, cfg: &ConfigFile) -> Result<(), SettingsError> {
        if let Some(band) = &cfg.table_band {
            let (a, b) = parse_band(band)?;
            self.table_min = a;
            self.table_max = b;
        }
        if let Some(p) = cfg.priority {
            self.priority = p;
        }
        if let Some(p) = cfg.protocol {
            self.protocol = Protocol::new(p)?;
        }
        Ok(())
    }

    pub fn in_band(&self, table: u32) -> bool {
        (self.table_min..=self.table_max).contains(&table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_clear_of_known_bands() {
        let s = Settings::default();
        s.validate().unwrap();
        for t in [52, 100, 200, 201, 202, 250, 2004, 2005, 51820, 52319] {
            assert!(!s.in_band(t), "default band must not include table {t}");
        }
        for p in [
            0, 1, 9, 20, 99, 100, 109, 112, 512, 1024, 1536, 5210, 5270, 32764, 32765, 32766,
        ] {
            assert_ne!(s.priority, p);
        }
    }

    #[test]
    fn config_overlay_and_errors() {
        let cfg: ConfigFile =
            toml::from_str("table_band = \"20000-20009\"\npriority = 1234\nprotocol = 77\n")
                .unwrap();
        let mut s = Settings::default();
        s.overlay(&cfg).unwrap();
        assert_eq!(
            (s.table_min, s.table_max, s.priority, s.protocol),
            (20000, 20009, 1234, Protocol::new(77).unwrap())
        );
        assert!(toml::from_str::<ConfigFile>("tables = 3").is_err());
        assert!(parse_band("10").is_err());
        assert!(parse_band("a-b").is_err());
        let bad = Settings {
            table_min: 250,
            table_max: 260,
            ..Settings::default()
        };
        assert!(bad.validate().is_err());
        let bad = Settings {
            priority: 32766,
            ..Settings::default()
        };
        assert!(bad.validate().is_err());
        for p in [0, 2, 4, 9, 12, 16, 42, 99, 186, 192] {
            let cfg = ConfigFile {
                protocol: Some(p),
                ..ConfigFile::default()
            };
            let e = Settings::default().overlay(&cfg).unwrap_err();
            assert!(
                matches!(e, SettingsError::Protocol(ref r) if r.number == p),
                "{e}"
            );
        }
        let e = Settings::default()
            .overlay(&ConfigFile {
                protocol: Some(9),
                ..ConfigFile::default()
            })
            .unwrap_err();
        assert!(
            e.to_string().contains("`ra` (router advertisements)"),
            "{e}"
        );
        for (min, max, table) in [
            (0, 10, 0),
            (250, 260, 252),
            (253, 253, 253),
            (200, 300, 252),
        ] {
            let bad = Settings {
                table_min: min,
                table_max: max,
                ..Settings::default()
            };
            assert!(
                matches!(bad.validate(), Err(SettingsError::ReservedTableInBand { table: t, .. }) if t == table),
                "{min}-{max}"
            );
        }
        for p in [0, 32766, 32767, 40000] {
            let bad = Settings {
                priority: p,
                ..Settings::default()
            };
            assert!(matches!(bad.validate(), Err(SettingsError::Priority(_))));
        }
        let ok = Settings {
            table_min: 1,
            table_max: 251,
            ..Settings::default()
        };
        ok.validate().unwrap();
    }

    #[test]
    fn missing_default_config_is_fine_missing_explicit_is_not() {
        assert!(Settings::load(Some(Path::new("/nonexistent/symroute.toml"))).is_err());
    }
}
