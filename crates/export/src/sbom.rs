//! SBOMs of an image: SPDX 2.3 JSON or CycloneDX 1.6 JSON documents describing the image
//! (name, tags, manifest digest, platform) and every Habitat package in it (ident, target,
//! the hart's BLAKE2b-256, licenses and upstream source from its MANIFEST, the origin as
//! supplier, DEPS as dependencies), written beside the outputs and attached on push as an
//! OCI 1.1 referrer. [`document`] is pure: the same image gives the same bytes (packages in
//! ident order, no wall-clock time, identifiers derived from the manifest digest).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use depot::{ResolvedClosure, ResolvedPackage};
use hart::ManifestFacts;
use oci_image::image::Built;
use oci_image::{BuiltImage, Platform};
use serde::Serialize;
use serde_json::{Value, json};

use crate::naming::Naming;
use crate::operation::{Events, Publisher};
use crate::plan::ImagePlan;
use crate::settings::ExportSettings;
use crate::{ExportError, error::io_at};

/// The document format (`--sbom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SbomFormat {
    Spdx,
    CycloneDx,
}

impl SbomFormat {
    /// The media type of the document, which is also the referrer's `artifactType`.
    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "application/spdx+json",
            SbomFormat::CycloneDx => "application/vnd.cyclonedx+json",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "spdx",
            SbomFormat::CycloneDx => "cyclonedx",
        }
    }
}

/// What an export does about SBOMs.
#[derive(Debug, Clone, Default)]
pub struct SbomSettings {
    /// `None`: no SBOM.
    pub format: Option<SbomFormat>,
    /// Where to write the document (one per platform beside it for a multi-platform image,
    /// see [`output_path`]).
    pub output: Option<PathBuf>,
}

/// The image an SBOM describes.
#[derive(Debug, Clone)]
pub struct SbomSubject {
    /// `registry/repository` (or the bare name of a local image).
    pub name: String,
    pub tags: Vec<String>,
    /// `sha256:HEX` of the image manifest.
    pub manifest_digest: String,
    pub platform: Platform,
    /// The image config's `created` (RFC 3339): the document's creation time, so that the
    /// same image gives the same document.
    pub created: String,
}

/// The base image the packages were put on (filled in by the base-image work).
#[derive(Debug, Clone)]
pub struct BaseComponent {
    /// As given, e.g. `docker.io/library/busybox:1.36`.
    pub reference: String,
    /// `sha256:HEX` of the base's manifest for this platform.
    pub digest: String,
}

/// A finished document.
#[derive(Debug, Clone)]
pub struct Sbom {
    pub format: SbomFormat,
    pub bytes: Vec<u8>,
    /// `sha256:HEX` of `bytes`.
    pub digest: String,
    /// What the document could not say (a package whose MANIFEST was unreadable, ...): the
    /// export turns them into warnings.
    pub notes: Vec<String>,
}

impl Sbom {
    pub fn media_type(&self) -> &'static str {
        self.format.media_type()
    }
}

/// The manifest an artifact refers to (its `subject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// An artifact to attach to a [`Subject`] as an OCI 1.1 referrer: an image manifest with
/// `artifactType`, the empty config and one layer holding `bytes`.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Also the media type of its one layer.
    pub artifact_type: String,
    pub bytes: Vec<u8>,
    /// `sha256:HEX` of `bytes`.
    pub digest: String,
    /// The referrer manifest's annotations (shown in the referrers list).
    pub annotations: BTreeMap<String, String>,
}

/// What attaching an artifact did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttachReport {
    /// `sha256:HEX` of the referrer manifest.
    pub manifest_digest: String,
    /// The registry answered with `OCI-Subject`: it lists referrers itself.
    pub referrers_api: bool,
    /// Otherwise the `sha256-HEX` tag of the referrers-tag fallback that now lists it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_tag: Option<String>,
    /// HTTP requests made.
    pub requests: u64,
}

/// The `--report` entry about the SBOMs of an export.
#[derive(Debug, Clone, Serialize)]
pub struct SbomReport {
    pub format: SbomFormat,
    pub media_type: String,
    /// One per image manifest (one per platform).
    pub documents: Vec<SbomDocumentReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SbomDocumentReport {
    /// `os/architecture[/variant]` of the image described.
    pub platform: String,
    /// The image manifest described (and the referrer's subject).
    pub subject: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached: Option<AttachReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The export's SBOM step (native engine), after the push and before the outputs: one
/// document per image manifest, written to `--sbom-output` (through a temporary name) and,
/// when the export pushed, attached to the manifest as a referrer. `images` are the
/// closures and plans in `built`'s order. `None` when no SBOM was asked for.
pub fn produce(
    settings: &ExportSettings,
    images: &[(ResolvedClosure, ImagePlan)],
    built: &Built,
    naming: &Naming,
    events: &dyn Events,
    publisher: Option<&dyn Publisher>,
) -> Result<Option<SbomReport>, ExportError> {
    let Some(format) = settings.sbom.format else {
        return Ok(None);
    };
    let built_images = built.images();
    if built_images.len() != images.len() {
        return Err(ExportError::Plan(format!(
            "{} images built for {} plans (internal error)",
            built_images.len(),
            images.len()
        )));
    }
    let several = images.len() > 1;
    let mut documents = Vec::new();
    for ((closure, plan), image) in images.iter().zip(built_images) {
        let platform = crate::platform::required(&closure.packages[plan.primary].metadata.target)?;
        let subject = SbomSubject {
            name: naming.name.clone(),
            tags: naming.tags.clone(),
            manifest_digest: image.manifest_digest.clone(),
            platform: platform.clone(),
            created: plan.config.created.clone(),
        };
        let packages: Vec<&ResolvedPackage> = closure.packages.iter().collect();
        let base = plan.base.as_ref().map(|b| BaseComponent {
            reference: b.reference.clone(),
            digest: b.manifest_digest.clone(),
        });
        let sbom = document(format, &subject, &packages, base.as_ref())?;
        let mut notes = sbom.notes.clone();
        for n in &sbom.notes {
            events.warning(&format!("SBOM ({platform}): {n}"));
        }
        let written = match &settings.sbom.output {
            Some(path) => {
                let path = output_path(path, several.then_some(&platform));
                write_file(&path, &sbom.bytes)?;
                Some(path)
            }
            None => None,
        };
        let attached = match publisher.filter(|_| settings.push) {
            Some(p) => {
                events.status(&format!(
                    "Attaching the {} SBOM of {} ({platform})",
                    format.name(),
                    naming.name
                ));
                // The image is pushed and tagged by now: a registry that refuses the
                // referrer (an old one that rejects `subject`) costs the SBOM's attachment,
                // not the export.
                match attach(p, naming, image, &subject, &sbom) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        let why = crate::operation::error_chain(&e);
                        events.warning(&format!(
                            "the SBOM of {} ({platform}) could not be attached: {why}",
                            naming.name
                        ));
                        notes.push(format!("not attached: {why}"));
                        None
                    }
                }
            }
            None => None,
        };
        documents.push(SbomDocumentReport {
            platform: platform.to_string(),
            subject: image.manifest_digest.clone(),
            digest: sbom.digest.clone(),
            size: sbom.bytes.len() as u64,
            written,
            attached,
            notes,
        });
    }
    Ok(Some(SbomReport {
        format,
        media_type: format.media_type().to_owned(),
        documents,
    }))
}

/// Where the document of `platform` goes: `path` itself for a one-platform image, else
/// `path` with `.OS-ARCH[-VARIANT]` before its extension (`sbom.linux-arm64-v8.json`).
pub fn output_path(path: &Path, platform: Option<&Platform>) -> PathBuf {
    let Some(p) = platform else {
        return path.to_owned();
    };
    let mut tag = format!("{}-{}", p.os, p.architecture);
    if let Some(v) = &p.variant {
        tag = format!("{tag}-{v}");
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{tag}"),
    };
    path.with_file_name(name)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    }
    hab_oci_fs::write(path, "sbom", bytes, hab_oci_fs::Persist::DURABLE).map_err(io_at(path))
}

fn attach(
    publisher: &dyn Publisher,
    naming: &Naming,
    image: &BuiltImage,
    subject: &SbomSubject,
    sbom: &Sbom,
) -> Result<AttachReport, ExportError> {
    let target = Subject {
        media_type: MEDIA_MANIFEST.to_owned(),
        digest: image.manifest_digest.clone(),
        size: image.manifest.len() as u64,
    };
    // The image's own time, not the clock's: attaching twice gives the same referrer.
    let annotations = BTreeMap::from([(
        "org.opencontainers.image.created".to_owned(),
        created_utc(&subject.created)?,
    )]);
    let artifact = Artifact {
        artifact_type: sbom.media_type().to_owned(),
        bytes: sbom.bytes.clone(),
        digest: sbom.digest.clone(),
        annotations,
    };
    publisher
        .attach(naming, &target, &artifact)
        .map_err(|source| ExportError::Push {
            name: naming.name.clone(),
            source,
        })
}

/// The SBOM of `subject` holding `packages` (on `base`, if any), in `format`.
pub fn document(
    format: SbomFormat,
    subject: &SbomSubject,
    packages: &[&ResolvedPackage],
    base: Option<&BaseComponent>,
) -> Result<Sbom, ExportError> {
    let mut sorted: Vec<&ResolvedPackage> = packages.to_vec();
    // Canonical order: by ident, whatever the layering or resolution order was.
    sorted.sort_by_key(|p| p.ident().to_string());
    sorted.dedup_by_key(|p| p.ident().to_string());
    let mut notes = Vec::new();
    for p in &sorted {
        if let Some(n) = &p.metadata.manifest.note {
            notes.push(format!("{}: {n}", p.ident()));
        }
        if !is_hex(p.checksum(), 64) {
            notes.push(format!(
                "{}: its checksum '{}' is not BLAKE2b-256 hex: left out",
                p.ident(),
                p.checksum()
            ));
        }
    }
    let created = created_utc(&subject.created)?;
    let value = match format {
        SbomFormat::Spdx => spdx(subject, &sorted, base, &created),
        SbomFormat::CycloneDx => cyclonedx(subject, &sorted, base),
    };
    let mut bytes = serde_json::to_vec_pretty(&value)
        .map_err(|e| ExportError::Plan(format!("serializing the SBOM: {e}")))?;
    bytes.push(b'\n');
    Ok(Sbom {
        format,
        digest: oci_image::sha256_digest(&bytes),
        bytes,
        notes,
    })
}

/// `created` as SPDX wants it (`%Y-%m-%dT%H:%M:%SZ`, UTC, no fraction).
fn created_utc(created: &str) -> Result<String, ExportError> {
    let t = time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            ExportError::Plan(format!(
                "the image's created time '{created}' is not RFC 3339: {e}"
            ))
        })?
        .to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(fmt)
        .map_err(|e| ExportError::Plan(format!("formatting the SBOM's time: {e}")))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn tool() -> String {
    format!("hab-oci-{}", env!("CARGO_PKG_VERSION"))
}

/// A URL a validator takes as a download location or home page: absolute http(s)/ftp,
/// no whitespace or characters URLs may not hold. Others (`nosuchfile.tar.gz`, as old
/// plans wrote) stay out of the typed fields.
fn web_url(u: &str) -> Option<&str> {
    let ok = ["http://", "https://", "ftp://"]
        .iter()
        .any(|s| u.len() > s.len() && u.starts_with(s))
        && u.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
                )
        });
    ok.then_some(u)
}

/// The hex of a `sha256:HEX` digest.
fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A package's licenses in SPDX terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Licenses {
    /// Nothing declared.
    None,
    /// The MANIFEST's words form one valid SPDX expression of listed, current licenses
    /// (`MIT`, `MIT OR Apache-2.0`).
    Expression(String),
    /// Separate licenses (Habitat's list, joined by `AND`: every one applies); `Err` holds
    /// a word that is no SPDX identifier.
    Each(Vec<Result<String, String>>),
}

fn licenses(facts: &ManifestFacts) -> Licenses {
    let words = &facts.licenses;
    if words.is_empty() {
        return Licenses::None;
    }
    let text = words.join(" ");
    if let Ok(expr) = spdx::Expression::parse_mode(&text, spdx::ParseMode::STRICT)
        && expr.requirements().all(
            |r| matches!(&r.req.license, spdx::LicenseItem::Spdx { id, .. } if !id.is_deprecated()),
        )
    {
        return Licenses::Expression(text);
    }
    Licenses::Each(
        words
            .iter()
            // Operators of an expression that did not parse mean nothing alone.
            .filter(|w| !matches!(w.as_str(), "AND" | "OR" | "WITH" | "and" | "or" | "(" | ")"))
            .map(|w| match spdx::license_id(w) {
                Some(id) if id.name == w.as_str() && !id.is_deprecated() => Ok(id.name.to_owned()),
                _ => Err(w.clone()),
            })
            .collect(),
    )
}

/// Only `[0-9A-Za-z.-]` in SPDX identifiers.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Unique identifiers from readable names: a second name that sanitizes to a taken one
/// gets `-2`, `-3`, ... (in the canonical order, so the same every time).
#[derive(Default)]
struct Ids {
    taken: BTreeSet<String>,
}

impl Ids {
    fn unique(&mut self, base: String) -> String {
        let mut id = base.clone();
        let mut n = 2;
        while !self.taken.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

fn package_purl(p: &ResolvedPackage) -> String {
    let i = p.ident();
    format!(
        "pkg:generic/{}/{}@{}?release={}&target={}",
        i.origin,
        i.name,
        i.version.as_deref().unwrap_or_default(),
        i.release.as_deref().unwrap_or_default(),
        p.metadata.target
    )
}

/// `pkg:oci/NAME@sha256%3AHEX?arch=..&repository_url=..` (the purl spec's `oci` type).
fn image_purl(name: &str, digest: &str, platform: &Platform) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    let mut purl = format!(
        "pkg:oci/{}@sha256%3A{}?arch={}",
        last.to_ascii_lowercase(),
        hex_of(digest),
        platform.architecture
    );
    if name.contains('/') {
        purl.push_str(&format!("&repository_url={}", name.to_ascii_lowercase()));
    }
    purl
}

fn spdx(
    subject: &SbomSubject,
    packages: &[&ResolvedPackage],
    base: Option<&BaseComponent>,
    created: &str,
) -> Value {
    let mut ids = Ids::default();
    let image_id = ids.unique("SPDXRef-Image".into());
    let digest_hex = hex_of(&subject.manifest_digest);
    let mut elements = Vec::new();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let mut image = json!({
        "SPDXID": image_id,
        "name": subject.name,
        "versionInfo": subject.manifest_digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": digest_hex}],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": image_purl(&subject.name, &subject.manifest_digest, &subject.platform),
        }],
        "comment": format!("OCI image for {}; tags: {}", subject.platform,
            if subject.tags.is_empty() { "none".to_owned() } else { subject.tags.join(", ") }),
    });
    if let Some(tag) = subject.tags.first() {
        image["summary"] = json!(format!("{}:{tag}", subject.name));
    }
    elements.push(image);
    if let Some(b) = base {
        let base_id = ids.unique("SPDXRef-BaseImage".into());
        let mut e = json!({
            "SPDXID": base_id,
            "name": b.reference,
            "versionInfo": b.digest,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "CONTAINER",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        });
        if is_hex(hex_of(&b.digest), 64) {
            e["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": hex_of(&b.digest)}]);
        }
        elements.push(e);
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "DESCENDANT_OF",
            "relatedSpdxElement": base_id,
        }));
    }
    // License names that are no SPDX identifier: declared once each as LicenseRef-….
    let mut refs: BTreeMap<String, String> = BTreeMap::new();
    let mut ref_ids = Ids::default();
    let mut license_ref = |word: &str| -> String {
        if let Some(id) = refs.get(word) {
            return id.clone();
        }
        let id = ref_ids.unique(format!("LicenseRef-{}", id_part(word)));
        refs.insert(word.to_owned(), id.clone());
        id
    };
    let mut by_ident: HashMap<String, String> = HashMap::new();
    for p in packages {
        let i = p.ident();
        let id = ids.unique(format!(
            "SPDXRef-Package-{}",
            id_part(&format!(
                "{}-{}-{}-{}",
                i.origin,
                i.name,
                i.version.as_deref().unwrap_or_default(),
                i.release.as_deref().unwrap_or_default()
            ))
        ));
        by_ident.insert(i.to_string(), id.clone());
        let facts = &p.metadata.manifest;
        let declared = match licenses(facts) {
            Licenses::None => "NOASSERTION".to_owned(),
            Licenses::Expression(e) => e,
            Licenses::Each(terms) => {
                let parts: Vec<String> = terms
                    .iter()
                    .map(|t| match t {
                        Ok(id) => id.clone(),
                        Err(word) => license_ref(word),
                    })
                    .collect();
                if parts.is_empty() {
                    "NOASSERTION".to_owned()
                } else {
                    parts.join(" AND ")
                }
            }
        };
        let mut e = json!({
            "SPDXID": id,
            "name": format!("{}/{}", i.origin, i.name),
            "versionInfo": i.version.as_deref().unwrap_or_default(),
            "supplier": format!("Organization: {}", i.origin),
            "downloadLocation": facts.source_url.as_deref().and_then(web_url).unwrap_or("NOASSERTION"),
            "filesAnalyzed": false,
            "primaryPackagePurpose": if p.metadata.is_service { "APPLICATION" } else { "LIBRARY" },
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": package_purl(p),
                },
                {
                    "referenceCategory": "OTHER",
                    "referenceType": "habitat-ident",
                    "referenceLocator": format!("{i}/{}", p.metadata.target),
                    "comment": "Habitat package ident and target",
                },
            ],
        });
        if is_hex(p.checksum(), 64) {
            e["checksums"] = json!([{
                "algorithm": "BLAKE2b-256",
                "checksumValue": p.checksum().to_ascii_lowercase(),
            }]);
        }
        if let Some(home) = facts.upstream_url.as_deref().and_then(web_url) {
            e["homepage"] = json!(home);
        }
        let mut source = Vec::new();
        if let Some(url) = &facts.source_url {
            source.push(format!("built by Habitat from {url}"));
        }
        if let Some(sha) = &facts.source_sha256 {
            source.push(format!("source SHA-256 {sha}"));
        }
        if !source.is_empty() {
            e["sourceInfo"] = json!(source.join(", "));
        }
        if let Some(m) = &facts.maintainer {
            e["originator"] = json!(format!("Person: {m}"));
        }
        e["comment"] = json!(format!(
            "Habitat package {i} for {}; hart BLAKE2b-256 {}",
            p.metadata.target,
            p.checksum()
        ));
        elements.push(e);
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": by_ident[&i.to_string()],
        }));
    }
    // DEPS, the direct runtime dependencies. TDEPS is their transitive closure, which the
    // DEPENDS_ON edges already give; listing it again would only repeat them.
    for p in packages {
        let from = &by_ident[&p.ident().to_string()];
        let mut deps: Vec<&String> = p
            .metadata
            .deps
            .iter()
            .filter_map(|d| by_ident.get(&d.to_string()))
            .collect();
        deps.sort();
        deps.dedup();
        for to in deps {
            relationships.push(json!({
                "spdxElementId": from,
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": to,
            }));
        }
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", subject.name, subject.manifest_digest),
        // Derived from the digest: the same image is the same document.
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/hab-oci/{}-{digest_hex}",
            id_part(&subject.name)
        ),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: {}", tool())],
        },
        "packages": elements,
        "relationships": relationships,
    });
    if !refs.is_empty() {
        let mut infos: Vec<(String, String)> = refs.into_iter().map(|(w, id)| (id, w)).collect();
        infos.sort();
        doc["hasExtractedLicensingInfos"] = Value::Array(
            infos
                .into_iter()
                .map(|(id, word)| {
                    json!({
                        "licenseId": id,
                        "name": word,
                        "extractedText": format!("The license named '{word}' by the package's Habitat plan (pkg_license)"),
                        "comment": "not an SPDX license identifier",
                    })
                })
                .collect(),
        );
    }
    doc
}

/// A UUID made from the manifest digest (SHA-256 based, with the version and variant bits
/// of a name-based UUID set so that validators take it): stable for the same image.
fn serial_number(subject: &SbomSubject) -> String {
    let hash = oci_image::sha256_digest(
        format!("hab-oci cyclonedx {}", subject.manifest_digest).as_bytes(),
    );
    let mut b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hash[7 + 2 * i..9 + 2 * i], 16).unwrap_or(0))
        .collect();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn cyclonedx(
    subject: &SbomSubject,
    packages: &[&ResolvedPackage],
    base: Option<&BaseComponent>,
) -> Value {
    let image_ref = format!("image:{}", subject.manifest_digest);
    let mut image_props =
        vec![json!({"name": "oci:platform", "value": subject.platform.to_string()})];
    for t in &subject.tags {
        image_props.push(json!({"name": "oci:tag", "value": t}));
    }
    let image = json!({
        "type": "container",
        "bom-ref": image_ref,
        "name": subject.name,
        "version": subject.manifest_digest,
        "hashes": [{"alg": "SHA-256", "content": hex_of(&subject.manifest_digest)}],
        "purl": image_purl(&subject.name, &subject.manifest_digest, &subject.platform),
        "properties": image_props,
    });
    let mut components = Vec::new();
    let mut image_deps = Vec::new();
    if let Some(b) = base {
        let base_ref = format!("base:{}", b.digest);
        let mut c = json!({
            "type": "container",
            "bom-ref": base_ref,
            "name": b.reference,
            "version": b.digest,
            "description": "the base image",
        });
        if is_hex(hex_of(&b.digest), 64) {
            c["hashes"] = json!([{"alg": "SHA-256", "content": hex_of(&b.digest)}]);
        }
        components.push(c);
        image_deps.push(base_ref);
    }
    let bom_ref = |p: &ResolvedPackage| format!("habitat:{}", p.ident());
    let present: BTreeSet<String> = packages.iter().map(|p| p.ident().to_string()).collect();
    let mut dependencies = Vec::new();
    for p in packages {
        let i = p.ident();
        let facts = &p.metadata.manifest;
        let mut c = json!({
            "type": if p.metadata.is_service { "application" } else { "library" },
            "bom-ref": bom_ref(p),
            "supplier": {"name": i.origin},
            "group": i.origin,
            "name": i.name,
            "version": i.version.as_deref().unwrap_or_default(),
            "purl": package_purl(p),
            "properties": [
                {"name": "habitat:ident", "value": i.to_string()},
                {"name": "habitat:release", "value": i.release.as_deref().unwrap_or_default()},
                {"name": "habitat:target", "value": p.metadata.target.to_string()},
            ],
        });
        if is_hex(p.checksum(), 64) {
            c["hashes"] =
                json!([{"alg": "BLAKE2b-256", "content": p.checksum().to_ascii_lowercase()}]);
        }
        if let Some(m) = &facts.maintainer {
            c["author"] = json!(m);
        }
        match licenses(facts) {
            Licenses::None => {}
            Licenses::Expression(e) if e.split_whitespace().count() > 1 => {
                c["licenses"] = json!([{"expression": e}]);
            }
            Licenses::Expression(id) => c["licenses"] = json!([{"license": {"id": id}}]),
            Licenses::Each(terms) if !terms.is_empty() => {
                c["licenses"] = Value::Array(
                    terms
                        .iter()
                        .map(|t| match t {
                            Ok(id) => json!({"license": {"id": id}}),
                            Err(word) => json!({"license": {"name": word}}),
                        })
                        .collect(),
                );
            }
            Licenses::Each(_) => {}
        }
        let mut refs = Vec::new();
        if let Some(home) = facts.upstream_url.as_deref().and_then(web_url) {
            refs.push(json!({"type": "website", "url": home}));
        }
        if let Some(url) = facts.source_url.as_deref().and_then(web_url) {
            let mut r = json!({"type": "source-distribution", "url": url});
            if let Some(sha) = &facts.source_sha256 {
                r["hashes"] = json!([{"alg": "SHA-256", "content": sha}]);
            }
            refs.push(r);
        }
        if !refs.is_empty() {
            c["externalReferences"] = Value::Array(refs);
        }
        components.push(c);
        image_deps.push(bom_ref(p));
        let mut deps: Vec<String> = p
            .metadata
            .deps
            .iter()
            .map(ToString::to_string)
            .filter(|d| present.contains(d))
            .map(|d| format!("habitat:{d}"))
            .collect();
        deps.sort();
        deps.dedup();
        dependencies.push(json!({"ref": bom_ref(p), "dependsOn": deps}));
    }
    dependencies.insert(0, json!({"ref": image_ref, "dependsOn": image_deps}));
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial_number(subject),
        "version": 1,
        // No timestamp: it would be the clock's, and the same image must give the same bytes.
        "metadata": {
            "tools": {"components": [{
                "type": "application",
                "name": "hab-oci",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": image,
        },
        "components": components,
        "dependencies": dependencies,
    })
}

#[cfg(test)]
mod tests;
