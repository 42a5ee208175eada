//! The line protocol between the L1 runner's `/init` (guest-images/runner/init) and the host.
//!
//! Every line for the host starts with `#NESTED:<nonce>:`; the nonce is random per L1 boot and
//! only on the L1 kernel command line, so an L2 guest printing to its console cannot forge one.

use std::collections::BTreeMap;

/// One event parsed from a marker line.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `/init` started; L1 uptime in seconds.
    Booted {
        /// L1 `/proc/uptime` when `/init` started.
        uptime: f64,
    },
    /// What KVM looks like in L1 (`module`, `svm`, `npt`, `nested`, `dev`, ...).
    Kvm(BTreeMap<String, String>),
    /// The `/dev/kvm` smoke check ran.
    Smoke {
        /// Its exit status.
        rc: i32,
        /// Its duration (L1 clock).
        secs: f64,
        /// Its output (one line: `kvm-smoke: ok api=12 ...` or `kvm-smoke: FAIL ...`).
        text: String,
    },
    /// Job `index` starts.
    Begin(usize),
    /// Job `index` ended with exit status `rc` after `secs` (L1 clock).
    End {
        /// Job index in this boot.
        index: usize,
        /// Exit status (128 + signal for a killed job, as the shell reports it).
        rc: i32,
        /// Duration.
        secs: f64,
    },
    /// All jobs ran; L1 powers off.
    Done,
    /// A non-fatal problem in `/init`.
    Warn(String),
}

/// Byte offset of `marker` (`#NESTED:<nonce>:`) in `line` when it stands after other text;
/// `None` when it is absent or already at the start.
pub fn marker_start(line: &str, marker: &str) -> Option<usize> {
    line.find(marker).filter(|i| *i > 0)
}

/// Parses `line` (without its line end) as a marker line of the boot with `nonce`.
/// Returns `None` for ordinary console lines, and for marker lines with another nonce.
pub fn parse_line(line: &str, nonce: &str) -> Option<Event> {
    let rest = line.strip_prefix("#NESTED:")?;
    let rest = rest.strip_prefix(nonce)?.strip_prefix(':')?;
    let (verb, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let kv = |key: &str| {
        args.split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    match verb {
        "BOOTED" => Some(Event::Booted {
            uptime: kv("uptime")?.parse().ok()?,
        }),
        "KVM" => Some(Event::Kvm(
            args.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )),
        "SMOKE" => {
            let rc = kv("rc")?.parse().ok()?;
            let secs = kv("secs")?.parse().unwrap_or(0.0);
            let text = args
                .split_once("kvm-smoke:")
                .map(|(_, t)| format!("kvm-smoke:{t}"))
                .unwrap_or_default();
            Some(Event::Smoke { rc, secs, text })
        }
        "BEGIN" => Some(Event::Begin(args.trim().parse().ok()?)),
        "END" => {
            let mut words = args.split_whitespace();
            let index = words.next()?.parse().ok()?;
            Some(Event::End {
                index,
                rc: kv("rc")?.parse().ok()?,
                secs: kv("secs").and_then(|s| s.parse().ok()).unwrap_or(0.0),
            })
        }
        "DONE" => Some(Event::Done),
        "WARN" => Some(Event::Warn(args.to_string())),
        _ => None,
    }
}

/// Quotes `s` for a POSIX shell (single quotes; a single quote becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len().saturating_add(2));
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_line_reads_every_verb() {
        let n = "abc123";
        assert_eq!(
            parse_line("#NESTED:abc123:BOOTED uptime=2.35", n),
            Some(Event::Booted { uptime: 2.35 })
        );
        let Some(Event::Kvm(m)) = parse_line(
            "#NESTED:abc123:KVM module=kvm_amd svm=2 npt=Y ept=- nested=1 dev=yes",
            n,
        ) else {
            panic!("KVM line not parsed");
        };
        assert_eq!(m.get("module").map(String::as_str), Some("kvm_amd"));
        assert_eq!(m.get("npt").map(String::as_str), Some("Y"));
        assert_eq!(
            parse_line(
                "#NESTED:abc123:SMOKE rc=0 secs=0.38 kvm-smoke: ok api=12 io_exits=1003",
                n
            ),
            Some(Event::Smoke {
                rc: 0,
                secs: 0.38,
                text: "kvm-smoke: ok api=12 io_exits=1003".into()
            })
        );
        assert_eq!(
            parse_line("#NESTED:abc123:BEGIN 3", n),
            Some(Event::Begin(3))
        );
        assert_eq!(
            parse_line("#NESTED:abc123:END 3 rc=7 secs=0.02", n),
            Some(Event::End {
                index: 3,
                rc: 7,
                secs: 0.02
            })
        );
        assert_eq!(
            parse_line("#NESTED:abc123:DONE uptime=3.1", n),
            Some(Event::Done)
        );
    }

    #[test]
    fn parse_line_other_nonce_or_plain_line_is_console() {
        assert_eq!(parse_line("#NESTED:forged:END 0 rc=0 secs=1", "abc"), None);
        // Seen here: a marker glued to the end of a cut-off L2 panic line.
        let glued = "[    1.65] CPU: 0 PID: 1 Comm: swapper/0 #NESTED:abc:END 0 rc=3 secs=5.94";
        let i = marker_start(glued, "#NESTED:abc:").unwrap();
        assert!(matches!(
            parse_line(&glued[i..], "abc"),
            Some(Event::End {
                index: 0,
                rc: 3,
                ..
            })
        ));
        assert_eq!(marker_start("#NESTED:abc:DONE", "#NESTED:abc:"), None);
        assert_eq!(marker_start("no marker here", "#NESTED:abc:"), None);
        assert_eq!(parse_line("#NESTED:abcd:END 0 rc=0", "abc"), None);
        assert_eq!(parse_line("[    1.0] Linux version 6.1", "abc"), None);
        assert_eq!(parse_line("#NESTED:abc:END x rc=0", "abc"), None);
    }

    #[test]
    fn shell_quote_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
