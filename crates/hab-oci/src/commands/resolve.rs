//! `hab-oci resolve`: the verified closure in layer order.

use std::process::ExitCode;

use anyhow::Result;
use depot::{Depot, Request};
use serde::Serialize;

use crate::cli::ResolveArgs;
use crate::printer::Printer;
use crate::settings;

#[derive(Serialize)]
struct Entry<'a> {
    ident: &'a hart::PackageIdent,
    target: &'a hart::PackageTarget,
    file: String,
    checksum: &'a str,
    signer: String,
    height: usize,
    requested: bool,
    deps: &'a [hart::PackageIdent],
}

pub(crate) fn run(args: &ResolveArgs, printer: &Printer) -> Result<ExitCode> {
    let requests = args
        .packages
        .iter()
        .map(|p| Request::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    if args.source.targets.len() > 1 {
        anyhow::bail!("resolve takes one --target (run it once per target)");
    }
    let depot_settings = settings::depot(&args.source, !args.no_cache)?;
    if let Some(m) = &depot_settings.metadata_cache {
        crate::interrupt::watch(m);
    }
    if let Some(b) = &depot_settings.builder {
        crate::interrupt::watch(&b.artifact_cache);
        crate::interrupt::watch(&b.key_cache);
    }
    let depot = Depot::open(&depot_settings)?;
    printer.verbose(&format!(
        "package sources: {}; key directories: {}",
        depot
            .searched()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        depot
            .key_dirs()
            .dirs()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let closure = depot.resolve(&requests)?;
    if args.json {
        let entries: Vec<Entry<'_>> = closure
            .packages
            .iter()
            .map(|p| Entry {
                ident: p.ident(),
                target: &p.metadata.target,
                // `resolve` sets no records: every package is a local hart.
                file: p
                    .hart
                    .as_ref()
                    .map(|h| h.path().display().to_string())
                    .unwrap_or_default(),
                checksum: p.checksum(),
                signer: p
                    .hart
                    .as_ref()
                    .map(|h| h.signer().to_string())
                    .unwrap_or_default(),
                height: p.height,
                requested: p.requested,
                deps: &p.metadata.deps,
            })
            .collect();
        printer.out(&serde_json::to_string_pretty(&entries)?)?;
    } else {
        for p in &closure.packages {
            printer.out(&p.ident().to_string())?;
        }
    }
    printer.status(&format!(
        "{} packages verified ({})",
        closure.packages.len(),
        closure.target
    ));
    Ok(ExitCode::SUCCESS)
}
