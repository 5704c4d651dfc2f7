//! hab-oci's own push of an engine's image: the image read out of the engine's store
//! (`docker save ID`, `buildah push ID docker-archive:/dev/stdout`) as one stream into a
//! temporary OCI layout, each layer compressed by `oci_image::import_archive` with the pinned
//! compressor as the engine's exact tar bytes, then pushed through the caller's
//! [`PushSession`] like a native image. A fresh CI runner then uploads only the blobs the
//! registry lacks: the same engine layer gives the same blob on any machine, where the
//! engine's own push from a fresh store compresses (and uploads) every layer anew.

use std::io::Read;
use std::process::{Command, Stdio};

use oci_image::{BuiltImage, Compression, ImportError, OciDir};

use super::{EngineHost, EngineKind, Prepared};
use crate::error::io_at;
use crate::naming::Naming;
use crate::report::PushReport;
use crate::{ExportError, PushSession};

/// Why an engine's image could not be read out of it.
#[derive(Debug, thiserror::Error)]
pub enum SaveFailure {
    #[error("{command} failed ({status}): {output}")]
    Engine {
        command: String,
        status: String,
        output: String,
    },
    #[error("running {command}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Archive(#[from] ImportError),
}

/// The image `image_id` pushed as `naming` says, through `session`: saved out of the
/// engine into a temporary layout (removed on return, success or not), then pushed. Nothing
/// is pushed unless the whole image was read and its layers matched its config.
pub(crate) fn push_saved(
    prepared: &Prepared,
    image_id: &str,
    session: Box<dyn PushSession>,
    compression: Compression,
    naming: &Naming,
    host: &dyn EngineHost,
) -> Result<(BuiltImage, PushReport), ExportError> {
    let tmp = std::env::temp_dir();
    let staging = hab_oci_fs::temp::dir_in(&tmp, "staging").map_err(io_at(&tmp))?;
    let store = OciDir::create(staging.path())?;
    host.step(&format!(
        "Reading {} out of {} to push it ({} layers)",
        naming.name,
        prepared.opts.kind.name(),
        compression.name()
    ));
    let image = save(prepared, image_id, &store, compression, host).map_err(|source| {
        ExportError::Save {
            image: format!("{} ({image_id})", naming.name),
            engine: prepared.opts.kind.name(),
            source,
        }
    })?;
    let built = oci_image::Built::Image(image);
    let report = session
        .finish(&store, &built, naming)
        .map_err(|source| ExportError::Push {
            name: naming.name.clone(),
            source,
        })?;
    let oci_image::Built::Image(image) = built else {
        unreachable!("made an image above")
    };
    Ok((image, report))
}

/// Streams the engine's archive of `image_id` into `store`.
fn save(
    p: &Prepared,
    image_id: &str,
    store: &OciDir,
    compression: Compression,
    host: &dyn EngineHost,
) -> Result<BuiltImage, SaveFailure> {
    let args: Vec<String> = match p.opts.kind {
        EngineKind::Docker => vec!["save".into(), image_id.into()],
        // containers/image writes a docker-archive to a pipe as it goes (an oci-archive it
        // would stage in a directory first); `--quiet` keeps stdout the archive's alone.
        EngineKind::Buildah => vec![
            "push".into(),
            "--quiet".into(),
            image_id.into(),
            "docker-archive:/dev/stdout".into(),
        ],
    };
    let argv: Vec<String> = std::iter::once(p.binary.display().to_string())
        .chain(args.iter().cloned())
        .collect();
    let command =
        shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "));
    host.command(&argv);
    let mut child = Command::new(&p.binary)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SaveFailure::Spawn {
            command: command.clone(),
            source,
        })?;
    // Read on the side: an engine that fills the stderr pipe must not stall the archive.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let imported = match child.stdout.take() {
        Some(mut out) => {
            let r = oci_image::import_archive(&mut out, store, compression);
            if r.is_ok() {
                // The end-of-archive blocks may be followed by padding: let the engine finish.
                let _ = std::io::copy(&mut out, &mut std::io::sink());
            } else {
                // Our own child, by its handle: it may be blocked writing what we stopped reading.
                let _ = child.kill();
            }
            r
        }
        None => Err(ImportError::Read(std::io::Error::other("no stdout"))),
    };
    let status = child.wait().map_err(|source| SaveFailure::Spawn {
        command: command.clone(),
        source,
    })?;
    let output = stderr
        .and_then(|t| t.join().ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    // The engine's own failure (an exit code, not our kill) explains a broken archive best.
    if status.code().is_some_and(|c| c != 0) {
        return Err(SaveFailure::Engine {
            command,
            status: status.to_string(),
            output,
        });
    }
    Ok(imported?)
}
