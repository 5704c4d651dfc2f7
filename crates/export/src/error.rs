//! Export errors: each names the package, the entry or the output it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{package}: tar entry '{entry}' {problem}")]
    BadEntry {
        package: String,
        entry: String,
        problem: String,
    },
    #[error("writing the layer of {package}")]
    LayerWrite {
        package: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Hart(#[from] hart::HartError),
    #[error(transparent)]
    Ident(#[from] hart::IdentError),
    #[error(transparent)]
    Depot(#[from] depot::DepotError),
    #[error("pushing {name}")]
    Push {
        name: String,
        source: crate::PublishError,
    },
    #[error(transparent)]
    Layout(#[from] oci_image::LayoutError),
    #[error(transparent)]
    Image(#[from] oci_image::image::ImageError),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Plan(String),
    /// A layer had to be built from a package that only a cache source's record stands for
    /// (an internal error: such packages are fetched before the build).
    #[error("the hart of {0} is not on this machine (a cache source's record stood in for it)")]
    NotLocal(String),
    #[error("the layer budget is {max} layers: {problem}")]
    LayerBudget { max: usize, problem: String },
    #[error(
        "every tag is disabled (latest, version, version-release, and no custom tag): at least one tag is needed"
    )]
    NoTags,
    #[error(
        "the Supervisor's /init.sh needs a busybox-static package in the closure (core/busybox-static)"
    )]
    NoBusybox,
    #[error("invalid template '{template}': {problem}")]
    Template { template: String, problem: String },
    #[error(
        "{} exists and is not an image hab-oci wrote; refusing to replace it",
        path.display()
    )]
    NotOurs { path: PathBuf },
    #[error(
        "invalid output '{0}': expected oci:DIR, oci-archive:FILE, docker-archive:FILE or docker-daemon"
    )]
    OutputSpec(String),
    #[error("{0}")]
    Engine(String),
    #[error(transparent)]
    EngineRefused(#[from] crate::engine::EngineRefusal),
    #[error("{command} failed ({status}); its last output:\n{output}")]
    EngineFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("reading {image} out of {engine} to push it")]
    Save {
        image: String,
        engine: &'static str,
        source: crate::engine::SaveFailure,
    },
    #[error("docker load failed: {0}")]
    DockerLoad(String),
    #[error(
        "target {target} makes no container images (Linux targets only: x86_64-linux, aarch64-linux)"
    )]
    NoPlatform { target: String },
    #[error(transparent)]
    Base(#[from] oci_image::base::BaseError),
    #[error("base image {base}")]
    BaseRegistry {
        base: String,
        source: crate::PublishError,
    },
    /// A multi-platform export where some targets failed: each with its own error.
    #[error("the image cannot be made for every target:{}", per_target(.0))]
    Targets(Vec<(String, ExportError)>),
}

fn per_target(failures: &[(String, ExportError)]) -> String {
    let mut text = String::new();
    for (target, e) in failures {
        text.push_str(&format!("\n  {target}: {e}"));
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
    }
    text
}

pub(crate) fn io_at(path: &std::path::Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}
