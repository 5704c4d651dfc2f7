//! All terminal output goes through here: results on stdout, messages on stderr.

use std::io::{self, Write};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Printer {
    quiet: bool,
    verbose: bool,
}

impl Printer {
    pub(crate) fn new(quiet: bool, verbose: bool) -> Printer {
        Printer { quiet, verbose }
    }

    /// One result line on stdout (never suppressed: scripts read it).
    pub(crate) fn out(&self, line: &str) -> io::Result<()> {
        let mut o = io::stdout().lock();
        writeln!(o, "{line}")
    }

    /// Progress bars are drawn unless `--quiet` or `-v` (bars and detail lines interleave
    /// badly); indicatif itself hides them when stderr is not a terminal.
    pub(crate) fn progress_enabled(&self) -> bool {
        !self.quiet && !self.verbose
    }

    /// A status message on stderr, unless `--quiet`.
    pub(crate) fn status(&self, line: &str) {
        if !self.quiet {
            let _ = writeln!(io::stderr().lock(), "{line}");
        }
    }

    /// Detail shown with `-v`.
    pub(crate) fn verbose(&self, line: &str) {
        if self.verbose && !self.quiet {
            let _ = writeln!(io::stderr().lock(), "{line}");
        }
    }

    /// A failure: the error and its causes, then any hint. Always shown.
    pub(crate) fn error(&self, err: &anyhow::Error) {
        let mut e = io::stderr().lock();
        let _ = writeln!(e, "error: {}", chain_text(err));
    }

    /// A per-item failure that does not stop the command (e.g. one of several files).
    pub(crate) fn item_error(&self, line: &str) {
        let _ = writeln!(io::stderr().lock(), "error: {line}");
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message so far
/// already holds (library errors often carry their source's text in their own message and
/// as their `source()`; anyhow's `{:#}` would print it twice).
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let c = cause.to_string();
        if text.is_empty() {
            text = c;
        } else if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain_text;

    /// Like a library error that shows its source in its message and as `source()`.
    #[derive(Debug)]
    struct Outer {
        source: std::io::Error,
    }

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "reading key: {}", self.source)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let inner = std::io::Error::other("key file is larger than 16384 bytes");
        let err = anyhow::Error::new(Outer { source: inner }).context("verifying x.hart");
        assert_eq!(
            chain_text(&err),
            "verifying x.hart: reading key: key file is larger than 16384 bytes"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain_text(&plain), "outer: inner");
    }
}
