//! Rules, routes and operations written the way iproute2 spells them, so a
//! plan reads as the commands an operator would type; and the two functions
//! that make anything printed safe: [`escape`] for text a terminal shows,
//! [`shell_quote`] for words a shell will run.
//!
//! Interface names come from whoever owns the namespace (a container may call
//! its interface `x$(id>PW)` or put an escape sequence in it; the kernel
//! refuses only `/`, `:`, whitespace and names over 15 bytes), so every name
//! in text output goes through [`escape`], and every word of a `--dry-run`
//! command through [`shell_quote`].

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::diff::Op;
use crate::model::{Family, Route, Rule, Scope, Snapshot};

/// `from 172.18.0.2/32 lookup 10001 priority 3000 protocol 115`
pub fn rule_args(r: &Rule) -> String {
    let from = r
        .src
        .map(|s| s.to_string())
        .unwrap_or_else(|| "all".to_string());
    let mut s = format!("from {from} lookup {} priority {}", r.table, r.priority);
    if r.protocol != 0 {
        s.push_str(&format!(" protocol {}", r.protocol));
    }
    s
}

/// A table number as iproute2 names it.
pub fn table_name(t: u32) -> String {
    match t {
        253 => "default".into(),
        254 => "main".into(),
        255 => "local".into(),
        n => n.to_string(),
    }
}

/// A protocol number as iproute2 names the common ones.
pub fn proto_name(p: u8) -> String {
    match p {
        1 => "redirect".into(),
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        9 => "ra".into(),
        16 => "dhcp".into(),
        n => n.to_string(),
    }
}

/// A rule as `ip rule show` prints it: `3000: from 172.18.0.2 lookup 10001 proto 115`.
pub fn rule_show(r: &Rule) -> String {
    let from = match r.src {
        Some(s) if s.prefix_len() == r.family.host_prefix() => s.addr().to_string(),
        Some(s) => s.to_string(),
        None => "all".to_string(),
    };
    let mut s = format!("{}: from {from} lookup {}", r.priority, table_name(r.table));
    if r.other_selectors {
        s.push_str(" (+ other selectors)");
    }
    if r.protocol > 2 {
        s.push_str(&format!(" proto {}", proto_name(r.protocol)));
    }
    s
}

/// A route as `ip route show` prints it (main's table and kernel's proto left out).
pub fn route_show(r: &Route, names: Option<&Snapshot>) -> String {
    let mut s = route_args(r, names);
    for (from, to) in [
        (" table 254".to_string(), String::new()),
        (
            format!(" table {}", r.table),
            format!(" table {}", table_name(r.table)),
        ),
        (
            format!(" proto {}", r.protocol),
            format!(" proto {}", proto_name(r.protocol)),
        ),
    ] {
        if let Some(pos) = s.find(&from) {
            s.replace_range(pos..pos + from.len(), &to);
        }
    }
    s
}

fn dev_name(oif: u32, names: Option<&Snapshot>) -> String {
    names
        .and_then(|s| s.link(oif))
        .map(|l| l.name.clone())
        .unwrap_or_else(|| format!("if{oif}"))
}

/// `172.18.0.0/16 dev eth1 scope link src 172.18.0.2 table 10001 proto 115`,
/// with interface names [`escape`]d.
pub fn route_args(r: &Route, names: Option<&Snapshot>) -> String {
    let words: Vec<String> = route_words(r, names)
        .iter()
        .map(|w| escape(w).into_owned())
        .collect();
    let mut s = words.join(" ");
    if !r.kind.is_unicast() {
        s = format!("(non-unicast) {s}");
    }
    s
}

/// The words of `ip route add` for `r`, names as they are (unescaped).
fn route_words(r: &Route, names: Option<&Snapshot>) -> Vec<String> {
    let mut w: Vec<String> = vec![if r.is_default() {
        "default".to_string()
    } else {
        r.dst.to_string()
    }];
    let mut push = |a: &str, b: String| {
        w.push(a.to_string());
        w.push(b);
    };
    if let Some(gw) = r.gateway {
        push("via", gw.to_string());
    }
    if r.oif != 0 {
        push("dev", dev_name(r.oif, names));
    }
    for nh in &r.multipath {
        w.push("nexthop".into());
        if let Some(gw) = nh.gateway {
            w.push("via".into());
            w.push(gw.to_string());
        }
        w.push("dev".into());
        w.push(dev_name(nh.oif, names));
    }
    if r.scope == Scope::Link && r.family() == Family::V4 {
        w.push("scope".into());
        w.push("link".into());
    }
    if let Some(src) = r.prefsrc {
        w.push("src".into());
        w.push(src.to_string());
    }
    if r.onlink {
        w.push("onlink".into());
    }
    w.push("table".into());
    w.push(r.table.to_string());
    if r.protocol != 0 {
        w.push("proto".into());
        w.push(r.protocol.to_string());
    }
    if r.metric != 0 {
        w.push("metric".into());
        w.push(r.metric.to_string());
    }
    w
}

/// The iproute2 command equivalent to an operation, run in `netns_path`:
/// `nsenter --net=PATH ip -4 rule add ...`, every word [`shell_quote`]d, so
/// the line pasted into a POSIX shell runs exactly this operation.
pub fn ip_command(op: &Op, netns_path: &str, names: Option<&Snapshot>) -> String {
    let mut words: Vec<String> = vec!["nsenter".into(), format!("--net={netns_path}"), "ip".into()];
    let (flag, what, verb, rest) = match op {
        Op::AddRule(r) => (r.family.ip_flag(), "rule", "add", rule_args(r)),
        Op::DelRule(r) => (r.family.ip_flag(), "rule", "del", rule_args(r)),
        Op::AddRoute(r) => (r.family().ip_flag(), "route", "add", String::new()),
        Op::DelRoute(r) => (r.family().ip_flag(), "route", "del", String::new()),
    };
    words.extend([flag.to_string(), what.into(), verb.into()]);
    match op {
        // Rules hold numbers and prefixes only.
        Op::AddRule(_) | Op::DelRule(_) => {
            words.extend(rest.split(' ').map(str::to_string));
        }
        Op::AddRoute(r) | Op::DelRoute(r) => words.extend(route_words(r, names)),
    }
    words
        .iter()
        .map(|w| shell_quote(w).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Characters a terminal would act on rather than show: C0 and C1 controls,
/// DEL, and the invisible format characters that reorder or hide text
/// (zero-width, bidirectional overrides and isolates, BOM).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `s` with every [`is_unsafe_char`] written as an escape (`\x1b`, `\n`,
/// `\u{202e}`), for text output. Safe text is returned as it is.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_keeping(s, false)
}

/// [`escape`], but newlines kept: for multi-line reports whose fields were
/// built from names.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    escape_keeping(s, true)
}

fn escape_keeping(s: &str, keep_newline: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| is_unsafe_char(c) && !(keep_newline && c == '\n');
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// Characters that never need quoting in a POSIX shell word.
fn shell_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c)
}

/// `s` as one POSIX shell word that the shell turns back into exactly `s`.
///
/// Plain words stay as they are; anything else is single-quoted (`'` itself
/// written `'\''`), so `$`, `;`, backquotes and globs are inert. Characters a
/// terminal would act on ([`is_unsafe_char`], except newline, which is kept
/// literally inside the quotes) are written as `"$(printf '\033')"`, the
/// octal bytes of their UTF-8 form: the printed line holds no raw control
/// character and still gives back the same bytes. (A NUL cannot be in a
/// shell word at all; interface names and paths never hold one.)
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    if !s.is_empty() && s.chars().all(shell_safe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    let mut open = false;
    for c in s.chars() {
        if is_unsafe_char(c) && c != '\n' {
            if open {
                out.push('\'');
                open = false;
            }
            out.push_str("\"$(printf '");
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\{b:03o}");
            }
            out.push_str("')\"");
            continue;
        }
        if c == '\'' {
            if open {
                out.push('\'');
                open = false;
            }
            out.push_str("\\'");
            continue;
        }
        if !open {
            out.push('\'');
            open = true;
        }
        out.push(c);
    }
    if open {
        out.push('\'');
    }
    if out.is_empty() {
        out.push_str("''");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a POSIX shell makes of `words`: each word back, via
    /// `printf '%s\0'`.
    fn sh_words(words: &[String]) -> Vec<String> {
        let script = format!("printf '%s\\0' {}", words.join(" "));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("run sh");
        assert!(out.status.success(), "sh -c {script:?}: {out:?}");
        let text = String::from_utf8(out.stdout).expect("utf-8 from sh");
        let mut v: Vec<String> = text.split('\0').map(str::to_string).collect();
        v.pop();
        v
    }

    #[test]
    fn hostile_names_round_trip_and_print_no_control_bytes() {
        let names = [
            "x$(id>PW)",
            "y;id",
            "\u{1b}[31mred",
            "a'b",
            "''",
            "",
            "tab\tx",
            "nl\nx",
            "`id`",
            "*",
            "~root",
            "back\\slash",
            "\u{202e}rtl",
            "\u{9b}csi",
            "\u{7f}",
            "eth0",
            "--net=/proc/1/fd/3",
        ];
        let quoted: Vec<String> = names.iter().map(|n| shell_quote(n).into_owned()).collect();
        for q in &quoted {
            assert!(
                !q.chars().any(|c| is_unsafe_char(c) && c != '\n'),
                "raw control character in {q:?}"
            );
        }
        assert_eq!(sh_words(&quoted), names);
        assert_eq!(shell_quote("eth0"), "eth0");
        assert_eq!(shell_quote("y;id"), "'y;id'");
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
        assert_eq!(shell_quote("\u{1b}[31m"), "\"$(printf '\\033')\"'[31m'");
    }

    #[test]
    fn escape_writes_controls_as_escapes() {
        assert_eq!(escape("eth0"), "eth0");
        assert_eq!(escape("\u{1b}[31mx"), "\\x1b[31mx");
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape_lines("a\nb\u{7}"), "a\nb\\x07");
        assert_eq!(escape("\u{202e}"), "\\u{202e}");
        assert_eq!(escape("\u{9b}"), "\\x9b");
        for s in ["\u{1b}", "\u{0}", "\u{7f}", "\u{85}", "\u{2066}"] {
            assert!(!escape(s).chars().any(is_unsafe_char), "{s:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// quote(s) read by a POSIX shell gives back s, for strings of
        /// anything but NUL, several words to a run.
        #[test]
        fn shell_quote_round_trips(words in proptest::collection::vec("[^\\x00]{0,12}", 1..6)) {
            let quoted: Vec<String> = words.iter().map(|w| shell_quote(w).into_owned()).collect();
            for q in &quoted {
                prop_assert!(!q.chars().any(|c| is_unsafe_char(c) && c != '\n'));
            }
            prop_assert_eq!(sh_words(&quoted), words);
        }

        #[test]
        fn escape_leaves_nothing_unsafe(s in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}a-z]{0,16}") {
            prop_assert!(!escape(&s).chars().any(is_unsafe_char));
        }
    }
}
