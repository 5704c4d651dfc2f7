//! `hab-oci hart verify | info | pack`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use hart::{DecodeOptions, Hart, PackOptions, SecretKey, VerifiedHart};
use serde::Serialize;

use crate::cli::KeysArgs;
use crate::printer::Printer;
use crate::settings;

/// Verifies each file; the rest are still checked when one fails.
pub(crate) fn verify(
    files: &[std::path::PathBuf],
    keys: &KeysArgs,
    printer: &Printer,
) -> Result<ExitCode> {
    let keys = settings::key_dirs(keys);
    let mut failed = 0usize;
    for file in files {
        let result = Hart::open(file)
            .and_then(|h| h.verify(&keys))
            .and_then(|v| v.ident_and_target(DecodeOptions::default()).map(|m| (v, m)));
        match result {
            Ok((_, m)) => {
                printer.out(&format!("{}: ok {} {}", file.display(), m.ident, m.target))?
            }
            Err(e) => {
                failed += 1;
                // Each error shows its cause or returns it, so `{:#}` repeats nothing.
                printer.item_error(&format!("{:#}", anyhow::Error::new(e)));
            }
        }
    }
    if failed > 0 {
        printer.status(&format!(
            "{failed} of {} files failed verification",
            files.len()
        ));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Info<'a> {
    file: String,
    ident: &'a hart::PackageIdent,
    target: &'a hart::PackageTarget,
    signer: String,
    checksum: &'a str,
    payload_hash: &'a str,
    file_size: u64,
    payload_size: u64,
    unpacked_size: u64,
    entries: u64,
    service: bool,
    svc_user: Option<&'a str>,
    svc_group: Option<&'a str>,
    exposes: &'a [String],
    path: &'a [String],
    deps: &'a [hart::PackageIdent],
    tdeps: &'a [hart::PackageIdent],
}

fn verified(file: &Path, keys: &KeysArgs) -> Result<VerifiedHart> {
    Ok(Hart::open(file)?.verify(&settings::key_dirs(keys))?)
}

pub(crate) fn info(
    file: &Path,
    keys: &KeysArgs,
    json: bool,
    printer: &Printer,
) -> Result<ExitCode> {
    let v = verified(file, keys)?;
    let m = v.metadata(DecodeOptions { threads: 2 })?;
    let info = Info {
        file: file.display().to_string(),
        ident: &m.ident,
        target: &m.target,
        signer: v.signer().to_string(),
        checksum: v.checksum(),
        payload_hash: v.payload_hash(),
        file_size: v.file_len(),
        payload_size: v.payload_len(),
        unpacked_size: m.unpacked_size,
        entries: m.entries,
        service: m.is_service,
        svc_user: m.svc_user.as_deref(),
        svc_group: m.svc_group.as_deref(),
        exposes: &m.exposes,
        path: &m.path,
        deps: &m.deps,
        tdeps: &m.tdeps,
    };
    if json {
        printer.out(&serde_json::to_string_pretty(&info)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let list = |v: &[hart::PackageIdent]| {
        if v.is_empty() {
            "(none)".to_owned()
        } else {
            v.iter().map(|d| format!("\n  {d}")).collect()
        }
    };
    let opt = |o: Option<&str>| o.unwrap_or("-").to_owned();
    let lines = [
        format!("Ident:         {}", info.ident),
        format!("Target:        {}", info.target),
        format!("Signer:        {}", info.signer),
        format!("Checksum:      {}", info.checksum),
        format!("File size:     {} bytes", info.file_size),
        format!("Payload size:  {} bytes (xz)", info.payload_size),
        format!(
            "Unpacked size: {} bytes in {} entries",
            info.unpacked_size, info.entries
        ),
        format!(
            "Service:       {}",
            if info.service { "yes" } else { "no (library)" }
        ),
        format!("SVC_USER:      {}", opt(info.svc_user)),
        format!("SVC_GROUP:     {}", opt(info.svc_group)),
        format!(
            "Exposes:       {}",
            if info.exposes.is_empty() {
                "-".to_owned()
            } else {
                info.exposes.join(" ")
            }
        ),
        format!(
            "PATH:          {}",
            if info.path.is_empty() {
                "-".to_owned()
            } else {
                info.path.join(":")
            }
        ),
        format!("Deps:          {}", list(info.deps)),
        format!("TDeps:         {}", list(info.tdeps)),
    ];
    for l in lines {
        printer.out(&l)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn pack(
    dir: &Path,
    key: &Path,
    output: Option<&Path>,
    level: u32,
    block_size: Option<u64>,
    printer: &Printer,
) -> Result<ExitCode> {
    let key = SecretKey::from_file(key)?;
    let mtime = settings::source_date_epoch()?;
    let opts = PackOptions {
        level,
        block_size: block_size.unwrap_or(0),
        mtime,
        ..PackOptions::default()
    };
    let cwd = std::env::current_dir().context("current directory")?;
    // The hart is written beside its destination (the output's directory, else the
    // current one) under a temporary name that an interruption removes.
    let dest_dir = output
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| cwd.clone(), |d| cwd.join(d));
    crate::interrupt::watch(&dest_dir);
    let packed = hart::pack(dir, &key, output, &cwd, &opts)?;
    printer.status(&format!("Signed {} with {}", packed.ident, key.name));
    printer.out(&packed.path.display().to_string())?;
    Ok(ExitCode::SUCCESS)
}
