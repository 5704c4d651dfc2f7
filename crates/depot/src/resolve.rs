//! Closure resolution: requested packages → every runtime dependency (TDEPS), verified,
//! checked for consistency, and ordered by the plan rules (height in the dependency graph,
//! leaves first, ties by origin/name then version/release, requested packages last in
//! argument order).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use hart::{IdentError, PackageIdent, PackageMetadata, PackageTarget, VerifiedHart};
use rayon::prelude::*;

use crate::error::{DepotError, Missing};
use crate::source::{Depot, Loaded};

/// A package asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// An ident, fuzzy or fully qualified: the latest match in the sources.
    Ident(PackageIdent),
    /// A `.hart` file given by path.
    Hart(PathBuf),
}

impl Request {
    /// A path to an existing file or anything ending in `.hart` is a file; otherwise an ident.
    pub fn parse(s: &str) -> Result<Request, IdentError> {
        if s.ends_with(".hart") || Path::new(s).is_file() {
            Ok(Request::Hart(PathBuf::from(s)))
        } else {
            PackageIdent::parse(s).map(Request::Ident)
        }
    }
}

/// One verified member of a closure.
#[derive(Debug, Clone)]
pub struct ResolvedPackage {
    pub hart: VerifiedHart,
    pub metadata: PackageMetadata,
    /// 0 for packages without dependencies, else 1 + the highest dependency.
    pub height: usize,
    /// Asked for on the command line (a primary package).
    pub requested: bool,
}

impl ResolvedPackage {
    pub fn ident(&self) -> &PackageIdent {
        &self.metadata.ident
    }
}

/// A verified closure in layer order.
#[derive(Debug, Clone)]
pub struct ResolvedClosure {
    pub target: PackageTarget,
    pub packages: Vec<ResolvedPackage>,
}

impl Depot {
    /// The latest package satisfying `ident` for the depot's target, verified.
    pub fn find_latest(&self, ident: &PackageIdent) -> Result<Loaded, DepotError> {
        let mut matches: Vec<(PackageIdent, PathBuf)> = Vec::new();
        let mut others: Vec<(PathBuf, PackageTarget)> = Vec::new();
        for c in &self.candidates {
            let (claimed, target) = match &c.claim {
                Some(claim) => {
                    let Some(version) = claim.version_for(&ident.origin, &ident.name) else {
                        continue;
                    };
                    (
                        PackageIdent::new_fq(&ident.origin, &ident.name, version, &claim.release),
                        claim.target.clone(),
                    )
                }
                // A file whose name says nothing: open it (verified first) to learn what it is.
                None => {
                    let l = self.load(&c.path)?;
                    (l.metadata.ident.clone(), l.metadata.target.clone())
                }
            };
            if !ident.satisfied_by(&claimed) {
                continue;
            }
            if target == self.target {
                matches.push((claimed, c.path.clone()));
            } else {
                others.push((c.path.clone(), target));
            }
        }
        let Some((best, _)) = hart::ident::latest(&matches, |m| &m.0) else {
            return Err(if others.is_empty() {
                DepotError::NotFound {
                    ident: ident.clone(),
                    target: self.target.clone(),
                    searched: self.searched.clone(),
                }
            } else {
                DepotError::OnlyOtherTargets {
                    ident: ident.clone(),
                    target: self.target.clone(),
                    others,
                }
            });
        };
        let best = best.clone();
        let paths: Vec<&Path> = matches
            .iter()
            .filter(|(id, _)| *id == best)
            .map(|(_, p)| p.as_path())
            .collect();
        self.load_one_of(&best, &paths)
    }

    /// Loads every file claiming `ident`; they must all be the same package.
    fn load_one_of(&self, ident: &PackageIdent, paths: &[&Path]) -> Result<Loaded, DepotError> {
        let mut chosen: Option<Loaded> = None;
        for path in paths {
            let l = self.load(path)?;
            if l.metadata.ident != *ident || l.metadata.target != self.target {
                return Err(DepotError::NameMismatch {
                    path: path.to_path_buf(),
                    named: format!("{ident} ({})", self.target),
                    inside: l.metadata.ident.clone(),
                });
            }
            match &chosen {
                None => chosen = Some(l),
                Some(c) if c.hart.checksum() != l.hart.checksum() => {
                    return Err(DepotError::Conflict {
                        ident: ident.clone(),
                        target: self.target.clone(),
                        paths: vec![c.hart.path().to_owned(), path.to_path_buf()],
                    });
                }
                Some(_) => {}
            }
        }
        chosen.ok_or_else(|| DepotError::NotFound {
            ident: ident.clone(),
            target: self.target.clone(),
            searched: self.searched.clone(),
        })
    }

    /// Loads a requested package and checks its target.
    fn load_request(&self, r: &Request) -> Result<Loaded, DepotError> {
        let l = match r {
            Request::Ident(id) => self.find_latest(id)?,
            Request::Hart(p) => self.load(p)?,
        };
        if l.metadata.target != self.target {
            return Err(DepotError::TargetMismatch {
                path: l.hart.path().to_owned(),
                ident: l.metadata.ident.clone(),
                found: l.metadata.target.clone(),
                wanted: self.target.clone(),
            });
        }
        Ok(l)
    }

    /// Resolves the requested packages and their runtime closure, verified and in layer order.
    pub fn resolve(&self, requests: &[Request]) -> Result<ResolvedClosure, DepotError> {
        self.resolve_with_base(&[], requests)
    }

    /// Like [`Depot::resolve`], plus `base` packages (e.g. the Supervisor's) that join the
    /// closure with their dependencies but are not requested (primary) packages.
    pub fn resolve_with_base(
        &self,
        base: &[Request],
        requests: &[Request],
    ) -> Result<ResolvedClosure, DepotError> {
        let all: Vec<(bool, &Request)> = base
            .iter()
            .map(|r| (false, r))
            .chain(requests.iter().map(|r| (true, r)))
            .collect();
        let requested: Vec<(bool, Loaded)> = all
            .par_iter()
            .map(|(primary, r)| self.load_request(r).map(|l| (*primary, l)))
            .collect::<Result<_, _>>()?;
        let mut primary: Vec<PackageIdent> = Vec::new();
        let mut members: BTreeMap<String, Loaded> = BTreeMap::new();
        for (is_primary, l) in requested {
            let id = l.metadata.ident.clone();
            if is_primary && !primary.contains(&id) {
                primary.push(id.clone());
            }
            if let Some(existing) = members.get(&id.to_string())
                && existing.hart.checksum() != l.hart.checksum()
            {
                return Err(DepotError::Conflict {
                    ident: id,
                    target: self.target.clone(),
                    paths: vec![existing.hart.path().to_owned(), l.hart.path().to_owned()],
                });
            }
            members.insert(id.to_string(), l);
        }

        // Breadth-first over DEPS and TDEPS, loading each wave in parallel.
        let mut missing: BTreeMap<String, Missing> = BTreeMap::new();
        let mut frontier: Vec<PackageIdent> = members.values().flat_map(deps_of).collect();
        while !frontier.is_empty() {
            let wave: BTreeSet<String> = frontier
                .iter()
                .map(ToString::to_string)
                .filter(|k| !members.contains_key(k) && !missing.contains_key(k))
                .collect();
            let wave: Vec<PackageIdent> = frontier
                .into_iter()
                .filter(|d| wave.contains(&d.to_string()))
                .fold(Vec::new(), |mut v, d| {
                    if !v.contains(&d) {
                        v.push(d);
                    }
                    v
                });
            let loaded: Vec<(PackageIdent, Option<Loaded>)> = wave
                .into_par_iter()
                .map(|d| self.find_exact(&d).map(|l| (d, l)))
                .collect::<Result<_, _>>()?;
            frontier = Vec::new();
            for (d, l) in loaded {
                match l {
                    Some(l) => {
                        frontier.extend(deps_of(&l));
                        members.insert(d.to_string(), l);
                    }
                    None => {
                        missing.insert(
                            d.to_string(),
                            Missing {
                                ident: d,
                                needed_by: Vec::new(),
                            },
                        );
                    }
                }
            }
        }
        if !missing.is_empty() {
            for m in missing.values_mut() {
                let direct: Vec<PackageIdent> = members
                    .values()
                    .filter(|l| l.metadata.deps.contains(&m.ident))
                    .map(|l| l.metadata.ident.clone())
                    .collect();
                m.needed_by = if direct.is_empty() {
                    members
                        .values()
                        .filter(|l| l.metadata.tdeps.contains(&m.ident))
                        .map(|l| l.metadata.ident.clone())
                        .collect()
                } else {
                    direct
                };
            }
            return Err(DepotError::Missing {
                missing: missing.into_values().collect(),
                searched: self.searched.clone(),
            });
        }
        // Cycles first: a cycle also makes TDEPS inconsistent, and the cycle says more.
        let heights = heights(&members)?;
        check_consistency(&members)?;

        let mut packages: Vec<ResolvedPackage> = members
            .into_values()
            .map(|l| {
                let height = heights[&l.metadata.ident.to_string()];
                let requested = primary.contains(&l.metadata.ident);
                ResolvedPackage {
                    hart: l.hart,
                    metadata: l.metadata,
                    height,
                    requested,
                }
            })
            .collect();
        packages.sort_by(|a, b| {
            let rank = |p: &ResolvedPackage| {
                primary
                    .iter()
                    .position(|id| id == p.ident())
                    .map_or(0, |i| i + 1)
            };
            rank(a)
                .cmp(&rank(b))
                .then(a.height.cmp(&b.height))
                .then_with(|| a.ident().total_cmp(b.ident()))
        });
        Ok(ResolvedClosure {
            target: self.target.clone(),
            packages,
        })
    }

    /// The package with exactly this fully qualified ident, if the sources have it.
    pub fn find_exact(&self, ident: &PackageIdent) -> Result<Option<Loaded>, DepotError> {
        match self.find_latest(ident) {
            Ok(l) => Ok(Some(l)),
            Err(DepotError::NotFound { .. }) | Err(DepotError::OnlyOtherTargets { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn deps_of(l: &Loaded) -> Vec<PackageIdent> {
    let mut v = l.metadata.deps.clone();
    for t in &l.metadata.tdeps {
        if !v.contains(t) {
            v.push(t.clone());
        }
    }
    v
}

/// DEPS must be a subset of TDEPS, and TDEPS must be transitively closed.
fn check_consistency(members: &BTreeMap<String, Loaded>) -> Result<(), DepotError> {
    for l in members.values() {
        let m = &l.metadata;
        let inconsistent = |detail: String| DepotError::Inconsistent {
            path: l.hart.path().to_owned(),
            detail,
        };
        for d in &m.deps {
            if !m.tdeps.contains(d) {
                return Err(inconsistent(format!(
                    "{}: DEPS lists {d}, which TDEPS does not",
                    m.ident
                )));
            }
        }
        for d in &m.tdeps {
            let Some(dep) = members.get(&d.to_string()) else {
                continue;
            };
            if let Some(t) = dep.metadata.tdeps.iter().find(|t| !m.tdeps.contains(t)) {
                return Err(inconsistent(format!(
                    "{}: TDEPS lacks {t}, which its dependency {d} needs",
                    m.ident
                )));
            }
        }
    }
    Ok(())
}

/// Height of every member over DEPS edges; a cycle is an error naming it.
fn heights(members: &BTreeMap<String, Loaded>) -> Result<HashMap<String, usize>, DepotError> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Visiting,
        Done(usize),
    }
    fn visit(
        key: &str,
        members: &BTreeMap<String, Loaded>,
        state: &mut HashMap<String, State>,
        path: &mut Vec<PackageIdent>,
    ) -> Result<usize, DepotError> {
        match state.get(key) {
            Some(State::Done(h)) => return Ok(*h),
            Some(State::Visiting) => {
                let start = path.iter().position(|p| p.to_string() == key).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(path[start].clone());
                return Err(DepotError::Cycle(cycle));
            }
            None => {}
        }
        let Some(l) = members.get(key) else {
            return Ok(0);
        };
        state.insert(key.to_owned(), State::Visiting);
        path.push(l.metadata.ident.clone());
        let mut h = 0;
        for d in &l.metadata.deps {
            let k = d.to_string();
            if members.contains_key(&k) {
                h = h.max(1 + visit(&k, members, state, path)?);
            }
        }
        path.pop();
        state.insert(key.to_owned(), State::Done(h));
        Ok(h)
    }
    let mut state = HashMap::new();
    let mut out = HashMap::new();
    for key in members.keys() {
        let h = visit(key, members, &mut state, &mut Vec::new())?;
        out.insert(key.clone(), h);
    }
    Ok(out)
}
