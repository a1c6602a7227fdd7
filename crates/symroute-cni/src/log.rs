//! The plugin's log: one line per event, to the configuration's `logFile`
//! when it can be opened, else to standard error; never to standard output,
//! which carries only the result or the error object the runtime parses.
//!
//! A line reads `2025-01-02T03:04:05.678Z symroute-cni[PID] ADD cid/net1: …`:
//! UTC with milliseconds (RFC 3339, `humantime`), the process, the command
//! and the attachment, so interleaved runs of many pods can be told apart.

use std::io::Write;
use std::path::Path;

/// Where log lines go, and who they are about.
pub struct Log<'a> {
    stderr: &'a mut dyn Write,
    file: Option<std::fs::File>,
    /// The CNI command (`ADD`, `DEL`, …), once known.
    pub command: &'static str,
    container: String,
    /// `containerID/ifname`, once both are checked.
    pub attachment: String,
}

impl<'a> Log<'a> {
    /// A log to `stderr`, about container `container` (CNI_CONTAINERID as
    /// given, possibly empty).
    pub fn new(stderr: &'a mut dyn Write, container: &str) -> Self {
        Log {
            stderr,
            file: None,
            command: "",
            container: container.to_string(),
            attachment: String::new(),
        }
    }

    /// Append to `path` from now on; when it cannot be opened, say so on
    /// standard error and keep logging there.
    pub fn log_to_file(&mut self, path: &Path) {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => self.file = Some(f),
            Err(e) => {
                let _ = writeln!(
                    self.stderr,
                    "symroute-cni: logFile {}: {e}; logging to standard error",
                    path.display()
                );
            }
        }
    }

    /// Write one line.
    pub fn line(&mut self, msg: &str) {
        let who = if self.attachment.is_empty() {
            &self.container
        } else {
            &self.attachment
        };
        let text = format!(
            "{} symroute-cni[{}] {} {who}: {msg}\n",
            humantime::format_rfc3339_millis(std::time::SystemTime::now()),
            std::process::id(),
            self.command,
        );
        let written = match &mut self.file {
            Some(f) => f.write_all(text.as_bytes()).is_ok(),
            None => false,
        };
        if !written {
            let _ = self.stderr.write_all(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_command_and_attachment_with_a_utc_millisecond_time() {
        let mut err = Vec::new();
        {
            let mut log = Log::new(&mut err, "c1");
            log.command = "ADD";
            log.line("first");
            log.attachment = "c1/net1".into();
            log.line("second");
        }
        let text = String::from_utf8(err).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let (time, rest) = lines[0].split_once(' ').expect("a time first");
        // 2025-01-02T03:04:05.678Z
        assert_eq!(time.len(), 24, "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
        humantime::parse_rfc3339(time).expect("RFC 3339");
        assert!(rest.ends_with(" ADD c1: first"), "{rest}");
        assert!(lines[1].ends_with(" ADD c1/net1: second"), "{}", lines[1]);
    }
}
