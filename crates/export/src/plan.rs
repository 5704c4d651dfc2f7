//! `ImagePlan`: a pure function from a resolved closure and options to the image — which
//! packages go in which layer, in what order, the extras layer, the config, name and tags.

use std::collections::{BTreeMap, BTreeSet};

use depot::{ResolvedClosure, ResolvedPackage};
use hart::{PackageIdent, PackageMetadata};
use oci_image::{HistoryEntry, ImageConfigSpec};

use crate::ExportError;
use crate::extras::{self, ExtraEntry, ExtrasInput};
use crate::naming::{self, Naming, NamingOptions};

/// Docker refuses images deeper than this (moby `maxLayerDepth`).
pub const DOCKER_MAX_LAYERS: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layering {
    /// One layer per package (grouped only above the layer budget).
    PerPackage,
    /// Every package in one layer.
    Single,
}

/// The resolved Supervisor packages (fully qualified), when the image has a Supervisor.
#[derive(Debug, Clone)]
pub struct Supervisor {
    pub hab: PackageIdent,
    pub sup: PackageIdent,
    pub launcher: PackageIdent,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub layering: Layering,
    /// The whole image's layer budget, extras layer included.
    pub max_layers: usize,
    pub supervisor: Option<Supervisor>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `K=V`, after `PATH=/bin`.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Overrides `created` (default: the primary package's release time).
    pub source_date_epoch: Option<u64>,
    pub naming: NamingOptions,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            layering: Layering::PerPackage,
            max_layers: 100,
            supervisor: None,
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            user: None,
            working_dir: None,
            labels: BTreeMap::new(),
            source_date_epoch: None,
            naming: NamingOptions {
                tag_latest: true,
                tag_version: true,
                tag_version_release: true,
                channel: "base".into(),
                ..NamingOptions::default()
            },
        }
    }
}

/// One package layer: indices into the closure's packages, in closure order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    pub members: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// Package layers, bottom to top.
    pub layers: Vec<PlannedLayer>,
    /// The extras layer, on top.
    pub extras: Vec<ExtraEntry>,
    pub extras_mtime: u64,
    /// Config; its `history` has one entry per layer (extras last).
    pub config: ImageConfigSpec,
    pub naming: Naming,
    /// Index of the primary package (decides users, init.sh and Cmd).
    pub primary: usize,
    /// The base image under the package layers (`--base-image`), once applied
    /// ([`crate::base::apply`]).
    pub base: Option<crate::base::PlanBase>,
    /// What putting it on the base found worth a warning (hidden base files, id clashes).
    pub warnings: Vec<String>,
}

/// Seconds since the epoch of a 14-digit UTC release (`YYYYMMDDhhmmss`); 0 if malformed.
pub fn release_time(ident: &PackageIdent) -> u64 {
    let Some(r) = ident.release.as_deref() else {
        return 0;
    };
    let fmt = time::macros::format_description!("[year][month][day][hour][minute][second]");
    time::PrimitiveDateTime::parse(r, fmt)
        .map(|t| t.assume_utc().unix_timestamp().max(0) as u64)
        .unwrap_or(0)
}

fn rfc3339(epoch: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn find_by_name<'a>(c: &'a ResolvedClosure, name: &str) -> Option<&'a ResolvedPackage> {
    c.packages.iter().find(|p| p.ident().name == name)
}

/// The primary package among the requested ones (in argument order): the first service,
/// else the first. It names the image and gives it its entrypoint, users and platform.
pub fn primary_of(requested: &[&PackageMetadata]) -> Option<usize> {
    requested
        .iter()
        .position(|m| m.is_service)
        .or((!requested.is_empty()).then_some(0))
}

impl ImagePlan {
    pub fn new(closure: &ResolvedClosure, opts: &PlanOptions) -> Result<ImagePlan, ExportError> {
        if opts.max_layers < 2 || opts.max_layers > DOCKER_MAX_LAYERS {
            return Err(ExportError::LayerBudget {
                max: opts.max_layers,
                problem: format!(
                    "out of range: 2 to {DOCKER_MAX_LAYERS} (Docker refuses deeper images)"
                ),
            });
        }
        let pkgs = &closure.packages;
        let requested: Vec<usize> = (0..pkgs.len()).filter(|&i| pkgs[i].requested).collect();
        let metas: Vec<&PackageMetadata> = requested.iter().map(|&i| &pkgs[i].metadata).collect();
        let primary = primary_of(&metas)
            .map(|i| requested[i])
            .ok_or_else(|| ExportError::Plan("no package was requested".into()))?;
        let p = &pkgs[primary];
        let platform = crate::platform::required(&p.metadata.target)?;
        let layers = assign_layers(closure, opts)?;
        let primary_time = release_time(p.ident());
        let created_epoch = opts.source_date_epoch.unwrap_or(primary_time);
        let extras_input = extras_input(closure, opts, &requested, p)?;
        let (entrypoint, cmd) = entrypoint_and_cmd(opts, p);
        // `--env PATH=...` replaces Habitat's `PATH=/bin` rather than adding a second PATH.
        let mut env: Vec<String> = Vec::new();
        if !opts.env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/bin".to_owned());
        }
        env.extend(opts.env.iter().cloned());
        let config = ImageConfigSpec {
            architecture: platform.architecture,
            os: platform.os,
            variant: platform.variant,
            created: rfc3339(created_epoch),
            user: opts.user.clone(),
            env,
            entrypoint,
            cmd,
            exposed_ports: exposed_ports(closure, opts, &requested),
            working_dir: opts.working_dir.clone(),
            labels: labels(opts, p, created_epoch),
            stop_signal: p.metadata.shutdown_signal.clone(),
            history: history(closure, &layers),
        };
        Ok(ImagePlan {
            layers,
            extras: extras::entries(&extras_input),
            extras_mtime: primary_time,
            config,
            naming: naming::naming(&opts.naming, p.ident())?,
            primary,
            base: None,
            warnings: Vec::new(),
        })
    }
}

/// What the extras layer is made of: the primary's users, `/bin` links (busybox's, the
/// Supervisor's `hab`, then the requested packages' binaries, later ones winning), the
/// cacerts package and `/init.sh`.
fn extras_input(
    closure: &ResolvedClosure,
    opts: &PlanOptions,
    requested: &[usize],
    primary: &ResolvedPackage,
) -> Result<ExtrasInput, ExportError> {
    let pkgs = &closure.packages;
    let busybox = find_by_name(closure, "busybox-static");
    let mut bin_links: Vec<(String, String)> = Vec::new();
    let mut link_all = |pkg: &ResolvedPackage, only: Option<&str>| {
        for b in &pkg.metadata.binaries {
            let name = b.rsplit('/').next().unwrap_or_default().to_owned();
            if only.is_some_and(|o| o != name) {
                continue;
            }
            bin_links.retain(|(n, _)| *n != name);
            bin_links.push((name, b.clone()));
        }
    };
    if let Some(b) = busybox {
        link_all(b, None);
    }
    if let Some(s) = &opts.supervisor
        && let Some(h) = pkgs.iter().find(|p| *p.ident() == s.hab)
    {
        link_all(h, Some("hab"));
    }
    for &i in requested {
        link_all(&pkgs[i], None);
    }
    let init = match (&opts.supervisor, busybox) {
        (Some(_), Some(b)) => Some((b.ident().clone(), primary.ident().short())),
        (Some(_), None) => return Err(ExportError::NoBusybox),
        (None, _) => None,
    };
    Ok(ExtrasInput {
        svc_user: primary
            .metadata
            .svc_user
            .clone()
            .unwrap_or_else(|| "hab".into()),
        svc_group: primary
            .metadata
            .svc_group
            .clone()
            .unwrap_or_else(|| "hab".into()),
        bin_links,
        cacerts: find_by_name(closure, "cacerts").map(|c| c.ident().clone()),
        init,
    })
}

/// The Supervisor's port, then the EXPOSES of the requested services (`/tcp` by default).
fn exposed_ports(
    closure: &ResolvedClosure,
    opts: &PlanOptions,
    requested: &[usize],
) -> Vec<String> {
    let mut exposed: Vec<String> = Vec::new();
    if opts.supervisor.is_some() {
        exposed.push("9631/tcp".into());
    }
    for &i in requested {
        let m = &closure.packages[i].metadata;
        if !m.is_service {
            continue;
        }
        for port in &m.exposes {
            let e = if port.contains('/') {
                port.clone()
            } else {
                format!("{port}/tcp")
            };
            if !exposed.contains(&e) {
                exposed.push(e);
            }
        }
    }
    exposed
}

/// Entrypoint and Cmd: as given; else the Supervisor's `/init.sh run ORIGIN/NAME`; else
/// the primary's run script.
fn entrypoint_and_cmd(
    opts: &PlanOptions,
    primary: &ResolvedPackage,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    match (&opts.supervisor, &opts.entrypoint, &opts.cmd) {
        (_, Some(e), c) => (Some(e.clone()), c.clone()),
        (Some(_), None, c) => (
            Some(vec!["/init.sh".to_owned()]),
            Some(
                c.clone()
                    .unwrap_or_else(|| vec!["run".into(), primary.ident().short()]),
            ),
        ),
        (None, None, Some(c)) => (None, Some(c.clone())),
        (None, None, None) => {
            let run = primary
                .metadata
                .run_script
                .as_ref()
                .map(|r| vec![format!("/hab/pkgs/{}/{r}", primary.ident())]);
            (run, None)
        }
    }
}

/// OCI and Habitat labels of the primary package, then the user's (which win).
fn labels(opts: &PlanOptions, primary: &ResolvedPackage, created: u64) -> BTreeMap<String, String> {
    let id = primary.ident();
    let version = id.version.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("org.opencontainers.image.title".into(), id.short()),
        ("org.opencontainers.image.version".into(), version.clone()),
        ("org.opencontainers.image.created".into(), rfc3339(created)),
        ("sh.habitat.package.ident".into(), id.to_string()),
        ("sh.habitat.package.origin".into(), id.origin.clone()),
        ("sh.habitat.package.name".into(), id.name.clone()),
        ("sh.habitat.package.version".into(), version),
        (
            "sh.habitat.package.release".into(),
            id.release.clone().unwrap_or_default(),
        ),
        (
            "sh.habitat.package.target".into(),
            primary.metadata.target.to_string(),
        ),
    ]);
    labels.extend(opts.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels
}

/// One history entry per layer (its packages), the extras last.
fn history(closure: &ResolvedClosure, layers: &[PlannedLayer]) -> Vec<HistoryEntry> {
    let comment = || Some(format!("hab-oci layer format v{}", crate::LAYER_FORMAT));
    let mut history: Vec<HistoryEntry> = layers
        .iter()
        .map(|l| HistoryEntry {
            created_by: format!(
                "hab-oci: {}",
                l.members
                    .iter()
                    .map(|&i| format!("/hab/pkgs/{}", closure.packages[i].ident()))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            comment: comment(),
        })
        .collect();
    history.push(HistoryEntry {
        created_by: "hab-oci: extras (/etc, /bin links, /init.sh, directories)".into(),
        comment: comment(),
    });
    history
}

/// Assigns packages to layers: one each while the budget allows; above it, size-aware
/// grouping (after nixpkgs' auto-layer): the requested packages and the largest others keep
/// their own layers, every other package joins the layer of the set of those that depend on
/// it. A small leaf added or removed therefore moves no other package.
pub fn assign_layers(
    closure: &ResolvedClosure,
    opts: &PlanOptions,
) -> Result<Vec<PlannedLayer>, ExportError> {
    let pkgs = &closure.packages;
    let n = pkgs.len();
    if opts.layering == Layering::Single {
        return Ok(vec![PlannedLayer {
            members: (0..n).collect(),
        }]);
    }
    let budget = opts.max_layers - 1; // the extras layer
    if n <= budget {
        return Ok((0..n).map(|i| PlannedLayer { members: vec![i] }).collect());
    }
    let requested: Vec<usize> = (0..n).filter(|&i| pkgs[i].requested).collect();
    if requested.len() >= budget {
        return Err(ExportError::LayerBudget {
            max: opts.max_layers,
            problem: format!(
                "{} requested packages each need their own layer, but it leaves room for {budget} package layers and at least one shared layer",
                requested.len(),
            ),
        });
    }
    let key_of = |i: usize| pkgs[i].ident().to_string();
    let tdeps: Vec<BTreeSet<String>> = pkgs
        .iter()
        .map(|p| p.metadata.tdeps.iter().map(ToString::to_string).collect())
        .collect();
    let mut others: Vec<usize> = (0..n).filter(|i| !pkgs[*i].requested).collect();
    others.sort_by(|&a, &b| {
        pkgs[b]
            .metadata
            .unpacked_size
            .cmp(&pkgs[a].metadata.unpacked_size)
            .then_with(|| pkgs[a].ident().total_cmp(pkgs[b].ident()))
    });
    let grouping = |k: usize| -> Vec<PlannedLayer> {
        let chosen: BTreeSet<usize> = requested
            .iter()
            .copied()
            .chain(others[..k].iter().copied())
            .collect();
        let mut groups: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
        let mut layers: Vec<PlannedLayer> = Vec::new();
        for i in 0..n {
            if chosen.contains(&i) {
                layers.push(PlannedLayer { members: vec![i] });
                continue;
            }
            let k = key_of(i);
            let owners: Vec<usize> = chosen
                .iter()
                .copied()
                .filter(|&c| tdeps[c].contains(&k))
                .collect();
            groups.entry(owners).or_default().push(i);
        }
        layers.extend(groups.into_values().map(|members| PlannedLayer { members }));
        // Requested packages last in argument (closure) order; the rest by their highest
        // member, so dependencies stay below their dependents.
        layers.sort_by_key(|l| {
            let top = l.members.iter().copied().max().unwrap_or(0);
            (l.members.iter().any(|&m| pkgs[m].requested), top)
        });
        layers
    };
    // Half the free budget goes to the largest packages, the other half is left for the
    // groups. The number kept does not depend on how many small packages there are, so
    // adding or removing a leaf moves no other package (unless the groups overflow).
    let reserved = others.len().min((budget - requested.len()) / 2);
    for k in (0..=reserved).rev() {
        let g = grouping(k);
        if g.len() <= budget {
            return Ok(g);
        }
    }
    // Even the coarsest grouping is too fine: everything not requested in one layer.
    let rest: Vec<usize> = (0..n).filter(|i| !pkgs[*i].requested).collect();
    let mut layers = vec![PlannedLayer { members: rest }];
    layers.extend(requested.iter().map(|&i| PlannedLayer { members: vec![i] }));
    Ok(layers)
}

/// `created` as RFC 3339, exposed for reports.
pub fn created_string(epoch: u64) -> String {
    rfc3339(epoch)
}

#[cfg(test)]
#[path = "plan/tests.rs"]
mod tests;
