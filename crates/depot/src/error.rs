//! Resolution errors: each names the package, the file and the directories searched.

use std::fmt;
use std::path::PathBuf;

use hart::{HartError, PackageIdent, PackageTarget};

/// One missing dependency and the packages that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub ident: PackageIdent,
    pub needed_by: Vec<PackageIdent>,
}

fn dirs(d: &[PathBuf]) -> String {
    if d.is_empty() {
        "(no package sources)".to_owned()
    } else {
        d.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn missing_list(m: &[Missing]) -> String {
    m.iter()
        .map(|m| {
            let by = m
                .needed_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            format!("\n  {} (needed by {by})", m.ident)
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DepotError {
    #[error("no package matching {ident} for {target} in {}", dirs(searched))]
    NotFound {
        ident: PackageIdent,
        target: PackageTarget,
        searched: Vec<PathBuf>,
    },
    #[error(
        "{ident} is only available for other targets than {target}: {}",
        others.iter().map(|(p, t)| format!("{} ({t})", p.display())).collect::<Vec<_>>().join(", ")
    )]
    OnlyOtherTargets {
        ident: PackageIdent,
        target: PackageTarget,
        others: Vec<(PathBuf, PackageTarget)>,
    },
    #[error("{}: package {ident} is built for {found}, but the image target is {wanted}", path.display())]
    TargetMismatch {
        path: PathBuf,
        ident: PackageIdent,
        found: PackageTarget,
        wanted: PackageTarget,
    },
    #[error(
        "{} missing from the package sources ({}):{}",
        if missing.len() == 1 { "1 dependency is".to_owned() } else { format!("{} dependencies are", missing.len()) },
        dirs(searched),
        missing_list(missing)
    )]
    Missing {
        missing: Vec<Missing>,
        searched: Vec<PathBuf>,
    },
    #[error(
        "two different packages claim to be {ident} ({target}): {}",
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    Conflict {
        ident: PackageIdent,
        target: PackageTarget,
        paths: Vec<PathBuf>,
    },
    #[error("dependency cycle: {}", Cycle(.0))]
    Cycle(Vec<PackageIdent>),
    #[error("{}: {detail}", path.display())]
    Inconsistent { path: PathBuf, detail: String },
    #[error(
        "{}: the file name says {named} but the package inside is {inside}",
        path.display()
    )]
    NameMismatch {
        path: PathBuf,
        named: String,
        inside: PackageIdent,
    },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Hart(#[from] HartError),
    #[error(transparent)]
    Builder(#[from] crate::builder::BuilderError),
    #[error(
        "no package matching {ident} for {target} in {}, and Builder is not asked (offline)",
        dirs(searched)
    )]
    NotFoundOffline {
        ident: PackageIdent,
        target: PackageTarget,
        searched: Vec<PathBuf>,
    },
    #[error(
        "no package matching {ident} for {target} in the '{channel}' channel of {url}{}",
        if elsewhere.is_empty() { String::new() } else { format!(" (channels that have it: {})", elsewhere.join(", ")) }
    )]
    NotInChannel {
        ident: PackageIdent,
        target: PackageTarget,
        channel: String,
        url: String,
        elsewhere: Vec<String>,
    },
    #[error("{url}: the download of {ident} is refused: {problem}")]
    BadDownload {
        ident: PackageIdent,
        url: String,
        problem: String,
    },
    #[error("{url}: the key {signer} Builder sent does not verify the package")]
    KeyRefused {
        signer: String,
        url: String,
        source: Box<HartError>,
    },
    #[error("{url}: the download of {ident} is refused")]
    DownloadUnverified {
        ident: PackageIdent,
        url: String,
        source: Box<DepotError>,
    },
}

struct Cycle<'a>(&'a [PackageIdent]);

impl fmt::Display for Cycle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&s.join(" -> "))
    }
}
