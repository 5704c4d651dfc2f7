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

    /// A failure: the error and its causes, then what to do next where there is a clear
    /// next step. Always shown.
    pub(crate) fn error(&self, err: &anyhow::Error) {
        let mut e = io::stderr().lock();
        let _ = writeln!(e, "error: {err:#}");
        if let Some(h) = crate::hints::hint_for(err) {
            let _ = writeln!(e, "hint: {h}");
        }
    }

    /// A per-item failure that does not stop the command (e.g. one of several files).
    pub(crate) fn item_error(&self, line: &str) {
        let _ = writeln!(io::stderr().lock(), "error: {line}");
    }
}

/// An error and its causes joined by `: ` (each error either shows its cause in its own
/// message or returns it from `source()`, never both, so nothing repeats).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
