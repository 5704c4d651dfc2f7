//! What to do next, for errors with a clear next step. The only place (with `settings`)
//! where flag names appear in messages: the libraries' errors say what went wrong, the
//! binary says which flag changes it.

use export::ExportError;
use export::engine::EngineRefusal;

/// An error with a hint chosen where more is known than the error says (e.g. which
/// packages are the Supervisor's). Displays and chains exactly as the error it wraps.
#[derive(Debug)]
pub(crate) struct Hinted<E> {
    pub(crate) error: E,
    pub(crate) hint: String,
}

impl<E: std::fmt::Display> std::fmt::Display for Hinted<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl<E: std::error::Error> std::error::Error for Hinted<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// The hint for the first error in `err`'s chain that has one.
pub(crate) fn hint_for(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|cause| {
        if let Some(h) = cause.downcast_ref::<Hinted<ExportError>>() {
            Some(h.hint.clone())
        } else if let Some(e) = cause.downcast_ref::<depot::DepotError>() {
            depot_hint(e)
        } else if let Some(e) = cause.downcast_ref::<ExportError>() {
            export_hint(e)
        } else if let Some(e) = cause.downcast_ref::<EngineRefusal>() {
            Some(engine_hint(e))
        } else if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            io.get_ref()
                .and_then(|inner| inner.downcast_ref::<hart::UnpackLimit>())
                .map(|_| unpack_hint())
        } else if let Some(hart::KeyLookupError::NotFound { .. }) =
            cause.downcast_ref::<hart::KeyLookupError>()
        {
            Some(key_hint())
        } else if let Some(hart::HartError::UnknownKey { problem, .. }) =
            cause.downcast_ref::<hart::HartError>()
        {
            matches!(**problem, hart::KeyLookupError::NotFound { .. }).then(key_hint)
        } else if let Some(oci_registry::RegistryError::Request { detail, .. }) =
            cause.downcast_ref::<oci_registry::RegistryError>()
        {
            detail
                .contains("spoken to over plain HTTP")
                .then(|| "pass --ca-cert FILE with its CA certificate".to_owned())
        } else {
            None
        }
    })
}

fn depot_hint(e: &depot::DepotError) -> Option<String> {
    use depot::builder::BuilderError;
    match e {
        depot::DepotError::Builder(BuilderError::Unauthorized { .. }) => {
            Some("check the token given with --auth or $HAB_AUTH_TOKEN".to_owned())
        }
        depot::DepotError::Builder(BuilderError::Transport { .. }) => Some(
            "check --url (or $HAB_BLDR_URL); --offline uses only the local sources and caches"
                .to_owned(),
        ),
        depot::DepotError::NotInChannel { elsewhere, .. } if !elsewhere.is_empty() => {
            Some("pick the channel with --channel (or $HAB_BLDR_CHANNEL)".to_owned())
        }
        depot::DepotError::NotFoundOffline { .. } => Some(
            "drop --offline (or $HAB_OCI_OFFLINE) to download it from Builder (--url)".to_owned(),
        ),
        depot::DepotError::Missing { missing, .. } => Some(format!(
            "download them (keys included) with `hab pkg download --download-directory DIR {}` and pass --source DIR",
            missing
                .iter()
                .map(|m| m.ident.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )),
        depot::DepotError::NotFound { .. } => {
            Some("pass the directory holding the .hart with --source DIR".to_owned())
        }
        _ => None,
    }
}

fn key_hint() -> String {
    "fetch it with `hab origin key download <origin> <revision>` or pass --keys DIR".to_owned()
}

fn unpack_hint() -> String {
    "if the package is genuine, raise the bound with --max-unpacked-size".to_owned()
}

fn export_hint(e: &ExportError) -> Option<String> {
    Some(match e {
        ExportError::NotOurs { .. } => "pass --force to replace it anyway".to_owned(),
        ExportError::LayerBudget { .. } => {
            "raise --max-layers (Docker accepts up to 125 layers)".to_owned()
        }
        ExportError::NoTags => {
            "drop one of --no-tag-latest, --no-tag-version, --no-tag-version-release, or pass --tag-custom".to_owned()
        }
        ExportError::NoBusybox => "add it to the sources or pass --no-supervisor".to_owned(),
        ExportError::EngineRefused(r) => engine_hint(r),
        ExportError::Depot(d) => return depot_hint(d),
        _ => return None,
    })
}

fn engine_hint(e: &EngineRefusal) -> String {
    match e {
        EngineRefusal::NoDaemon(_) => "start it (`dockerd &` or `systemctl start docker`) or point DOCKER_HOST at it; --engine native needs no daemon".to_owned(),
        EngineRefusal::NoBuildx(_) => "install docker-buildx, pass --docker-builder legacy, or use a docker 20.10 client (--engine-binary /usr/bin/docker)".to_owned(),
        EngineRefusal::InlineCacheLegacy => "pass --docker-builder buildkit, or drop --inline-cache (the legacy builder reuses layers of pulled --cache-from images)".to_owned(),
        EngineRefusal::CacheToNeedsBuildx(_) => "drop --cache-to: with BuildKit the inline cache (on by default) makes the pushed image its own cache source; or use --engine buildah".to_owned(),
        EngineRefusal::OldBuildah(_) => "--cache-from/--cache-to need buildah 1.27 or later; drop them or upgrade buildah".to_owned(),
        EngineRefusal::NotFound { .. } => "pass --engine-binary PATH, or use --engine native, which needs no daemon".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_come_from_typed_errors_anywhere_in_the_chain() {
        let err = anyhow::Error::new(ExportError::NoTags).context("exporting");
        assert!(hint_for(&err).is_some_and(|h| h.contains("--tag-custom")));
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            hart::UnpackLimit { max: 10 },
        );
        let err = anyhow::Error::new(hart::HartError::Payload {
            path: "x.hart".into(),
            source: io,
        });
        assert!(hint_for(&err).is_some_and(|h| h.contains("--max-unpacked-size")));
        assert!(hint_for(&anyhow::anyhow!("plain")).is_none());
    }
}
