//! `hab-oci key generate`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use hart::SecretKey;

use crate::printer::Printer;
use crate::settings;

pub(crate) fn generate(origin: &str, dir: Option<&Path>, printer: &Printer) -> Result<ExitCode> {
    if !hart::ident::valid_origin(origin) {
        bail!(
            "invalid origin '{origin}': it must match [a-z0-9][a-z0-9_-]* and be at most 255 characters"
        );
    }
    let dir = dir.map_or_else(settings::key_cache_for_writing, Path::to_owned);
    let key = SecretKey::generate(origin)?;
    let (public, secret) = key.write_pair(&dir)?;
    printer.status(&format!("Generated origin key pair {}", key.name));
    printer.out(&public.display().to_string())?;
    printer.out(&secret.display().to_string())?;
    Ok(ExitCode::SUCCESS)
}
