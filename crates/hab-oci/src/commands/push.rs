//! `export --push-image`: the native build's layers to the registry as they are built
//! (through the export's layer events), or an engine's image read out of the engine, then
//! the manifest and the tags.

use std::sync::{Arc, Mutex};

use export::naming::registry_of;
use export::report::PushReport;
use std::collections::HashMap;

use export::base_source::BaseRead;
use export::cache_source::{Platform, RemoteImage};
use export::{LayerReady, Naming, PublishError, PushSession, RemoteBlob};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci_image::{Built, OciDir};
use oci_registry::{
    Blob, BlobOutcome, Credentials, Manifest, PlatformRead, PushProgress, PushRequest, Pusher,
};

use crate::printer::Printer;
use crate::settings::PushSettings;

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

/// The native push through `oci-registry`, subscribed to the export's layer events.
pub(crate) struct Publisher<'a> {
    settings: PushSettings,
    multi: MultiProgress,
    printer: &'a Printer,
    /// The registry of the push once started: the login given is for it only.
    push_registry: Mutex<String>,
}

impl<'a> Publisher<'a> {
    pub(crate) fn new(
        settings: PushSettings,
        multi: &MultiProgress,
        printer: &'a Printer,
    ) -> Publisher<'a> {
        // Known before the push starts when --registry-url gives it: a base image read
        // from that registry then gets the push's login too.
        let push_registry = Mutex::new(settings.login_registry.clone().unwrap_or_default());
        Publisher {
            settings,
            multi: multi.clone(),
            printer,
            push_registry,
        }
    }
}

impl export::Publisher for Publisher<'_> {
    /// Connects to the registry before the build, so that the build's layers can go up
    /// while the rest is still being built. Upload bars join the build's.
    fn start(&self, naming: &Naming) -> Result<Box<dyn PushSession>, PublishError> {
        let registry = registry_of(&naming.name);
        if let Ok(mut r) = self.push_registry.lock() {
            r.clone_from(&registry);
        }
        let creds = match &self.settings.login {
            Some((username, password)) => Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            None => Credentials::from_docker_config(&registry),
        };
        // Native layers go up as they are built; an engine's, once read out of the engine.
        self.printer
            .status(&format!("Pushing {} to {registry}", naming.name));
        let bars = Arc::new(PushBars {
            multi: self.multi.clone(),
            bars: Mutex::new(Vec::new()),
        });
        let pusher = Pusher::start(
            &naming.name,
            &self.settings.mount_from,
            &creds,
            &self.settings.registry,
            bars,
        )?;
        Ok(Box::new(Session {
            pusher,
            mount_from: self.settings.mount_from.clone(),
            printer: *self.printer,
            confirmed: Mutex::new(HashMap::new()),
        }))
    }

    /// The SBOM as a referrer of the pushed manifest, with the push's credentials.
    fn attach(
        &self,
        naming: &Naming,
        subject: &export::sbom::Subject,
        artifact: &export::sbom::Artifact,
    ) -> Result<export::sbom::AttachReport, PublishError> {
        let registry = registry_of(&naming.name);
        let creds = match &self.settings.login {
            Some((username, password)) => Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            None => Credentials::from_docker_config(&registry),
        };
        let stats = oci_registry::attach(
            &oci_registry::AttachRequest {
                repository: naming.name.clone(),
                subject: oci_registry::Descriptor {
                    media_type: subject.media_type.clone(),
                    digest: subject.digest.clone(),
                    size: subject.size,
                },
                artifact_type: artifact.artifact_type.clone(),
                blob: artifact.bytes.clone(),
                annotations: artifact.annotations.clone(),
            },
            &creds,
            &self.settings.registry,
        )?;
        self.printer.status(&format!(
            "Attached {} to {}@{} as {}{}",
            artifact.artifact_type,
            naming.name,
            subject.digest,
            stats.manifest_digest,
            match &stats.fallback_tag {
                Some(tag) => format!(" (listed under the referrers tag {tag})"),
                None => String::new(),
            }
        ));
        Ok(export::sbom::AttachReport {
            manifest_digest: stats.manifest_digest,
            referrers_api: stats.referrers_api,
            fallback_tag: stats.fallback_tag,
            requests: stats.requests,
        })
    }

    /// A cache source's manifest and config, with the push's login when it is in the
    /// push's registry, else what docker would use for its registry.
    fn read_image(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<RemoteImage>, PublishError> {
        let read = oci_registry::read_image(
            reference,
            &platform.os,
            &platform.architecture,
            &self.creds_for(reference),
            &self.settings.registry,
        )?;
        Ok(read.map(|d| RemoteImage {
            repository: d.repository,
            manifest_digest: d.manifest_digest,
            manifest: d.manifest,
            config: d.config,
        }))
    }

    fn read_base(&self, reference: &str, platform: &Platform) -> Result<BaseRead, PublishError> {
        Ok(
            match oci_registry::read_platform_image(
                reference,
                platform,
                &self.creds_for(reference),
                &self.settings.registry,
            )? {
                PlatformRead::Found(d) => BaseRead::Found {
                    repository: d.repository,
                    index_digest: d.index_digest,
                    manifest: d.manifest,
                    config: d.config,
                },
                PlatformRead::NoImage => BaseRead::NoImage,
                PlatformRead::NoPlatform(p) => BaseRead::NoPlatform(p),
                PlatformRead::Unsupported { media_type } => BaseRead::Unsupported { media_type },
            },
        )
    }

    fn fetch_blob(
        &self,
        reference: &str,
        digest: &str,
        size: u64,
        dest: &mut dyn std::io::Write,
    ) -> Result<u64, PublishError> {
        Ok(oci_registry::fetch_blob(
            reference,
            digest,
            size,
            dest,
            &self.creds_for(reference),
            &self.settings.registry,
        )?)
    }
}

impl Publisher<'_> {
    /// The push's login for a reference in the push's registry, else what docker would use
    /// for its registry.
    fn creds_for(&self, reference: &str) -> Credentials {
        let registry = registry_of(reference);
        match &self.settings.login {
            Some((username, password))
                if self.push_registry.lock().is_ok_and(|r| *r == registry) =>
            {
                Credentials::Basic {
                    username: username.clone(),
                    password: password.clone(),
                }
            }
            _ => Credentials::from_docker_config(&registry),
        }
    }
}

struct Session {
    pusher: Pusher,
    mount_from: Vec<String>,
    printer: Printer,
    /// Blobs of cache sources confirmed in the repository: not uploaded again.
    confirmed: Mutex<HashMap<String, BlobOutcome>>,
}

impl PushSession for Session {
    fn layer_ready(&self, layer: &LayerReady) {
        if let Some(path) = &layer.path {
            self.pusher.offer(Blob {
                digest: layer.digests.digest.clone(),
                size: layer.digests.size,
                path: path.clone(),
            });
        }
    }

    fn confirm(&self, blobs: &[RemoteBlob]) -> Vec<bool> {
        let asked: Vec<(String, u64, String)> = blobs
            .iter()
            .map(|b| (b.digest.clone(), b.size, b.repository.clone()))
            .collect();
        let outcomes = self.pusher.confirm(&asked);
        if let Ok(mut c) = self.confirmed.lock() {
            for (b, o) in blobs.iter().zip(&outcomes) {
                if let Some(o) = o {
                    c.insert(b.digest.clone(), *o);
                }
            }
        }
        outcomes.iter().map(Option::is_some).collect()
    }

    /// The push's end: the blobs not uploaded yet, then the tags.
    fn finish(
        self: Box<Self>,
        store: &OciDir,
        built: &Built,
        naming: &Naming,
    ) -> Result<PushReport, PublishError> {
        let confirmed = self.confirmed.lock().map(|c| c.clone()).unwrap_or_default();
        let mut blobs: Vec<Blob> = Vec::new();
        let mut reused = (0, 0);
        let images = built.images();
        for l in images.iter().flat_map(|i| &i.layers) {
            match confirmed.get(&l.digests.digest) {
                Some(BlobOutcome::Mounted) => reused.1 += 1,
                Some(_) => reused.0 += 1,
                None => {}
            }
            if !confirmed.contains_key(&l.digests.digest)
                && !blobs.iter().any(|b| b.digest == l.digests.digest)
            {
                blobs.push(Blob {
                    digest: l.digests.digest.clone(),
                    size: l.digests.size,
                    path: store.blob_path(&l.digests.digest)?,
                });
            }
        }
        for image in &images {
            blobs.push(Blob {
                digest: image.config_digest.clone(),
                size: image.config.len() as u64,
                path: store.blob_path(&image.config_digest)?,
            });
        }
        let children = match built {
            Built::Image(_) => Vec::new(),
            Built::Index(_) => images
                .iter()
                .map(|i| Manifest {
                    bytes: i.manifest.clone(),
                    digest: i.manifest_digest.clone(),
                    media_type: oci_image::image::MEDIA_MANIFEST.into(),
                })
                .collect(),
        };
        let req = PushRequest {
            repository: naming.name.clone(),
            tags: naming.tags.clone(),
            blobs,
            manifest: built.bytes().to_vec(),
            manifest_digest: built.digest().to_owned(),
            manifest_media_type: built.media_type().into(),
            children,
            mount_from: self.mount_from.clone(),
        };
        let mut stats = self.pusher.finish(&req)?;
        // Layers of cache sources were confirmed before the build: they count as found or
        // mounted, not as uploads.
        stats.blobs_skipped += reused.0;
        stats.blobs_mounted += reused.1;
        self.printer.status(&format!(
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
}
