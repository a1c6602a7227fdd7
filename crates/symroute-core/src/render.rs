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
    let from = r.src.map_or_else(|| "all".to_string(), |s| s.to_string());
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
        .map_or_else(|| format!("if{oif}"), |l| l.name.clone())
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

/// Whether `name` is one the kernel could give an interface (1 to 15 bytes,
/// no `/`, `:` or whitespace): only such a name is printed as a `dev` word
/// of a command (the display form of a name that is not UTF-8 never is).
pub fn is_kernel_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// The iproute2 command equivalent to an operation, run in the namespace at
/// `netns_path` (its raw bytes, as given): `nsenter --net=PATH ip -4 rule add
/// ...`, every word [`shell_quote_bytes`]d, so the line pasted into a POSIX
/// shell runs exactly this operation. With `guard_inode`, the line starts
/// with `test "$(stat -Lc %i PATH)" = INODE &&`: pasted later, after the
/// namespace went away and the path (a reused PID's `/proc/PID/ns/net`)
/// names another one, it does nothing.
///
/// A command that cannot be printed safely (a route through a link the
/// snapshot has no usable name for: `dev if7` would name whatever interface
/// a container calls `if7`) is a `#` comment saying so instead.
pub fn ip_command(
    op: &Op,
    netns_path: &[u8],
    names: Option<&Snapshot>,
    guard_inode: Option<u64>,
) -> String {
    let (flag, what, verb) = match op {
        Op::AddRule(r) => (r.family.ip_flag(), "rule", "add"),
        Op::DelRule(r) => (r.family.ip_flag(), "rule", "del"),
        Op::AddRoute(r) => (r.family().ip_flag(), "route", "add"),
        Op::DelRoute(r) => (r.family().ip_flag(), "route", "del"),
    };
    let mut words: Vec<String> = vec![flag.to_string(), what.into(), verb.into()];
    match op {
        // Rules hold numbers and prefixes only.
        Op::AddRule(r) | Op::DelRule(r) => {
            words.extend(rule_args(r).split(' ').map(str::to_string));
        }
        Op::AddRoute(r) | Op::DelRoute(r) => {
            for oif in std::iter::once(r.oif)
                .chain(r.multipath.iter().map(|h| h.oif))
                .filter(|&i| i != 0)
            {
                let usable = names
                    .and_then(|s| s.link(oif))
                    .is_some_and(|l| is_kernel_ifname(&l.name));
                if !usable {
                    return format!(
                        "# cannot print this command safely: link {oif} has no usable name in the snapshot"
                    );
                }
            }
            words.extend(route_words(r, names));
        }
    }
    let mut net = b"--net=".to_vec();
    net.extend_from_slice(netns_path);
    let mut line = String::new();
    if let Some(ino) = guard_inode {
        let _ = write!(
            line,
            "test \"$(stat -Lc %i {})\" = {ino} && ",
            shell_quote_bytes(netns_path)
        );
    }
    line.push_str("nsenter ");
    line.push_str(&shell_quote_bytes(&net));
    line.push_str(" ip");
    for w in &words {
        line.push(' ');
        line.push_str(&shell_quote(w));
    }
    line
}

/// Characters a terminal would act on rather than show: C0 and C1 controls,
/// DEL, and the invisible characters that reorder or hide text: soft hyphen,
/// combining grapheme joiner, Arabic letter mark, Hangul fillers, Khmer and
/// Mongolian invisible vowels and variation selectors, zero-width and
/// bidirectional marks, line and paragraph separators, embeddings,
/// overrides and isolates, invisible operators, variation selectors,
/// specials, tags, BOM.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{34f}'
                | '\u{61c}'
                | '\u{115f}'..='\u{1160}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fff8}'
                | '\u{e0000}'..='\u{e0fff}'
        )
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
/// written `'\\''`), so `$`, `;`, backquotes and globs are inert. Characters a
/// terminal would act on ([`is_unsafe_char`], except newline, which is kept
/// literally inside the quotes) are written as `"$(printf '\\033')"`, the
/// octal bytes of their UTF-8 form: the printed line holds no raw control
/// character and still gives back the same bytes. (A NUL cannot be in a
/// shell word at all; interface names and paths never hold one.)
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    if !s.is_empty() && s.chars().all(shell_safe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(shell_quote_bytes(s.as_bytes()).into_owned())
}

/// [`shell_quote`] for raw bytes (a path as the OS gives it): bytes that
/// are not UTF-8 are written in octal through `printf` like unsafe
/// characters, so the word gives back exactly these bytes.
pub fn shell_quote_bytes(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b)
        && !s.is_empty()
        && s.chars().all(shell_safe)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(b.len() + 2);
    let mut open = false;
    let octal = |out: &mut String, open: &mut bool, bytes: &[u8]| {
        if *open {
            out.push('\'');
            *open = false;
        }
        out.push_str("\"$(printf '");
        for b in bytes {
            let _ = write!(out, "\\{b:03o}");
        }
        out.push_str("')\"");
    };
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_unsafe_char(c) && c != '\n' {
                let mut buf = [0u8; 4];
                octal(&mut out, &mut open, c.encode_utf8(&mut buf).as_bytes());
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
        if !chunk.invalid().is_empty() {
            octal(&mut out, &mut open, chunk.invalid());
        }
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
    fn path_bytes_round_trip_through_the_shell() {
        let paths: [&[u8]; 4] = [
            b"/tmp/x\x1b[31m",
            b"/tmp/\xff\xfe",
            b"/run/netns/web",
            b"/a'b c",
        ];
        for p in paths {
            let q = shell_quote_bytes(p).into_owned();
            assert!(!q.chars().any(|c| is_unsafe_char(c) && c != '\n'), "{q:?}");
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {q}"))
                .output()
                .expect("run sh");
            assert_eq!(out.stdout, p, "{q}");
        }
    }

    #[test]
    fn commands_never_name_a_link_without_a_usable_name() {
        use crate::model::{Link, RouteType};
        let route = |oif| Route {
            table: 10000,
            dst: "10.0.0.0/24".parse().unwrap(),
            gateway: None,
            oif,
            prefsrc: None,
            scope: Scope::Link,
            kind: RouteType(1),
            metric: 0,
            onlink: false,
            protocol: 115,
            multipath: Vec::new(),
        };
        let link = |index, name: &str| Link {
            index,
            name: name.into(),
            mac: None,
            up: true,
            loopback: false,
            addrs: Vec::new(),
        };
        let snap = Snapshot {
            links: vec![link(3, "eth0"), link(4, "b\\xff (not UTF-8)")],
            ..Snapshot::default()
        };
        let ok = ip_command(
            &Op::AddRoute(route(3)),
            b"/run/netns/x",
            Some(&snap),
            Some(77),
        );
        assert_eq!(
            ok,
            "test \"$(stat -Lc %i /run/netns/x)\" = 77 && nsenter --net=/run/netns/x ip -4 route add 10.0.0.0/24 dev eth0 scope link table 10000 proto 115"
        );
        for oif in [4, 7] {
            let c = ip_command(
                &Op::AddRoute(route(oif)),
                b"/run/netns/x",
                Some(&snap),
                None,
            );
            assert!(
                c.starts_with("# cannot print this command safely: link "),
                "{c}"
            );
            assert!(!c.contains("dev"), "{c}");
        }
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
        fn escape_leaves_nothing_unsafe(s in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}a-z]{0,16}|[\\u{ad}\\u{34f}\\u{61c}\\u{115f}\\u{1160}\\u{17b4}\\u{17b5}\\u{180b}-\\u{180f}\\u{2028}-\\u{202e}\\u{2060}-\\u{206f}\\u{3164}\\u{fe00}-\\u{fe0f}\\u{ffa0}\\u{fff0}-\\u{fff8}\\u{e0000}-\\u{e0fff}a-z]{1,16}") {
            prop_assert!(!escape(&s).chars().any(is_unsafe_char));
            prop_assert!(!escape(&s).contains(|c: char| !c.is_ascii() && is_unsafe_char(c)));
        }

        /// Every listed invisible character is unsafe, and is escaped.
        #[test]
        fn invisible_characters_are_escaped(c in prop::sample::select(vec![
            '\u{ad}', '\u{34f}', '\u{61c}', '\u{115f}', '\u{1160}', '\u{17b4}', '\u{17b5}',
            '\u{180b}', '\u{180f}', '\u{2028}', '\u{2029}', '\u{202a}', '\u{202e}', '\u{2060}',
            '\u{206f}', '\u{3164}', '\u{fe00}', '\u{fe0f}', '\u{ffa0}', '\u{fff0}', '\u{fff8}',
            '\u{e0000}', '\u{e0001}', '\u{e007f}', '\u{e0fff}',
        ])) {
            prop_assert!(is_unsafe_char(c));
            let s = format!("a{c}b");
            let e = escape(&s);
            let want = if (c as u32) < 0x100 {
                format!("a\\x{:02x}b", c as u32)
            } else {
                format!("a\\u{{{:x}}}b", c as u32)
            };
            prop_assert_eq!(e.as_ref(), want);
        }
    }
}
