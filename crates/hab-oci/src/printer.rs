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

#[cfg(test)]
mod tests {
    /// Library errors either show their cause or return it from `source()`, never both:
    /// the printed chain names each cause once.
    #[test]
    fn causes_print_once() {
        let io = || std::io::Error::other("disk on fire");
        let errors: Vec<anyhow::Error> = vec![
            anyhow::Error::new(hart::HartError::Io {
                path: "x.hart".into(),
                source: io(),
            }),
            anyhow::Error::new(hart::HartError::Payload {
                path: "x.hart".into(),
                source: io(),
            }),
            anyhow::Error::new(export::ExportError::Io {
                path: "out".into(),
                source: io(),
            }),
            anyhow::Error::new(export::ExportError::LayerWrite {
                package: "a/b/1/2".into(),
                source: io(),
            }),
            anyhow::Error::new(depot::DepotError::Io {
                path: "src".into(),
                source: io(),
            }),
            anyhow::Error::new(export::ExportError::from(hart::HartError::Io {
                path: "x.hart".into(),
                source: io(),
            }))
            .context("exporting"),
        ];
        for e in errors {
            let text = format!("{e:#}");
            assert_eq!(text.matches("disk on fire").count(), 1, "{text}");
        }
    }
}
