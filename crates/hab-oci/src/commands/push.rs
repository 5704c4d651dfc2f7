//! `export --push-image`: the built image from the staging layout to the registry.

use std::io::Read as _;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use export::Naming;
use export::naming::registry_of;
use export::report::PushReport;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci_image::{BuiltImage, OciDir};
use oci_registry::{
    Blob, BlobOutcome, Credentials, PushProgress, PushRequest, Pusher, RegistryOptions,
};

use crate::cli::ExportArgs;
use crate::printer::Printer;

/// Bars for blobs being uploaded; skipped and mounted blobs only count.
struct PushBars {
    multi: MultiProgress,
    bars: Mutex<Vec<(String, ProgressBar)>>,
}

impl PushProgress for PushBars {
    fn blob_started(&self, digest: &str, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "  push {msg:20} {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(
            digest
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>(),
        );
        if let Ok(mut b) = self.bars.lock() {
            b.push((digest.to_owned(), bar));
        }
    }
    fn blob_bytes(&self, digest: &str, bytes: u64) {
        if let Ok(b) = self.bars.lock()
            && let Some((_, bar)) = b.iter().find(|(d, _)| d == digest)
        {
            bar.inc(bytes);
        }
    }
    fn blob_restarted(&self, digest: &str) {
        if let Ok(b) = self.bars.lock()
            && let Some((_, bar)) = b.iter().find(|(d, _)| d == digest)
        {
            bar.set_position(0);
        }
    }
    fn blob_finished(&self, digest: &str, _outcome: BlobOutcome) {
        if let Ok(mut b) = self.bars.lock()
            && let Some(i) = b.iter().position(|(d, _)| d == digest)
        {
            let (_, bar) = b.remove(i);
            bar.finish_and_clear();
        }
    }
}

fn credentials(a: &ExportArgs, registry: &str) -> Result<Credentials> {
    Ok(match (&a.username, &a.password, a.password_stdin) {
        (Some(u), Some(p), _) => Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        },
        (Some(u), None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .context("reading the password from stdin")?;
            Credentials::Basic {
                username: u.clone(),
                password: p.trim_end_matches(['\n', '\r']).to_owned(),
            }
        }
        _ => Credentials::from_docker_config(registry),
    })
}

/// Connects to the registry before the build, so that the build's layers can go up while
/// the rest is still being built. Upload bars join the build's `multi`.
pub(crate) fn start(
    a: &ExportArgs,
    naming: &Naming,
    multi: &MultiProgress,
    printer: &Printer,
) -> Result<Pusher> {
    let registry = registry_of(&naming.name);
    let creds = credentials(a, &registry)?;
    let opts = RegistryOptions {
        insecure: a.insecure_registry.clone(),
        ca_certs: a.ca_cert.clone(),
        jobs: usize::from(a.jobs),
        chunk_size: a.push_chunk_size,
        ..RegistryOptions::default()
    };
    printer.status(&format!(
        "Pushing {} to {registry} (layers go up as they are built)",
        naming.name
    ));
    let bars = Arc::new(PushBars {
        multi: multi.clone(),
        bars: Mutex::new(Vec::new()),
    });
    Pusher::start(&naming.name, &a.mount_from, &creds, &opts, bars)
        .with_context(|| format!("pushing {}", naming.name))
}

/// The push's end: the blobs not uploaded yet, then the tags.
pub(crate) fn finish(
    pusher: Pusher,
    a: &ExportArgs,
    store: &OciDir,
    image: &BuiltImage,
    naming: &Naming,
    printer: &Printer,
) -> Result<PushReport> {
    let mut blobs: Vec<Blob> = Vec::new();
    for l in &image.layers {
        if !blobs.iter().any(|b| b.digest == l.digests.digest) {
            blobs.push(Blob {
                digest: l.digests.digest.clone(),
                size: l.digests.size,
                path: store.blob_path(&l.digests.digest)?,
            });
        }
    }
    blobs.push(Blob {
        digest: image.config_digest.clone(),
        size: image.config.len() as u64,
        path: store.blob_path(&image.config_digest)?,
    });
    let req = PushRequest {
        repository: naming.name.clone(),
        tags: naming.tags.clone(),
        blobs,
        manifest: image.manifest.clone(),
        manifest_digest: image.manifest_digest.clone(),
        manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        mount_from: a.mount_from.clone(),
    };
    let stats = pusher
        .finish(&req)
        .with_context(|| format!("pushing {}", naming.name))?;
    printer.status(&format!(
        "Pushed {}: {} blobs uploaded ({} bytes), {} mounted, {} already there, {} of them while building; {} tags written, {} unchanged; {} requests",
        naming.name,
        stats.blobs_uploaded,
        stats.bytes_uploaded,
        stats.blobs_mounted,
        stats.blobs_skipped,
        stats.blobs_early,
        stats.tags_written,
        stats.tags_unchanged,
        stats.requests
    ));
    Ok(PushReport {
        references: stats.references,
        blobs_skipped: stats.blobs_skipped,
        blobs_mounted: stats.blobs_mounted,
        blobs_uploaded: stats.blobs_uploaded,
        blobs_early: stats.blobs_early,
        bytes_uploaded: stats.bytes_uploaded,
        tags_written: stats.tags_written,
        tags_unchanged: stats.tags_unchanged,
        requests: stats.requests,
    })
}
