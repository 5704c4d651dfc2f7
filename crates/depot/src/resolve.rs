//! Closure resolution: requested packages → every runtime dependency (TDEPS), verified,
//! checked for consistency, and ordered by the plan rules (height in the dependency graph,
//! leaves first, ties by origin/name then version/release, requested packages last in
//! argument order).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use hart::{IdentError, PackageIdent, PackageMetadata, PackageTarget, VerifiedHart};
use rayon::prelude::*;

use crate::builder::Origin;
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
    /// `None` for a package taken from a cache source's record: its layer is reused from
    /// the registry and its hart is not on this machine (see [`crate::Records`]).
    pub hart: Option<VerifiedHart>,
    /// BLAKE2b-256 of the whole `.hart`.
    pub checksum: String,
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

    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// The compressed payload's size; 0 for a recorded package (nothing to read).
    pub fn payload_len(&self) -> u64 {
        self.hart.as_ref().map_or(0, VerifiedHart::payload_len)
    }
}

/// A verified closure in layer order.
#[derive(Debug, Clone)]
pub struct ResolvedClosure {
    pub target: PackageTarget,
    pub packages: Vec<ResolvedPackage>,
}

impl Depot {
    /// The package `ident` means for the depot's target, verified: with Builder configured,
    /// the channel's latest unless a local one is newer (see `remote.rs`); else the latest
    /// in the local sources.
    pub fn find_latest(&self, ident: &PackageIdent) -> Result<Loaded, DepotError> {
        self.find_for(ident, Origin::Main)
    }

    /// The latest package satisfying `ident` in the local sources, verified.
    pub(crate) fn find_local(&self, ident: &PackageIdent) -> Result<Loaded, DepotError> {
        self.find_local_in(ident, false)
    }

    /// Like [`Depot::find_local`]; with `sources_only`, the artifact caches do not count.
    pub(crate) fn find_local_in(
        &self,
        ident: &PackageIdent,
        sources_only: bool,
    ) -> Result<Loaded, DepotError> {
        let mut matches: Vec<(PackageIdent, PathBuf)> = Vec::new();
        let mut others: Vec<(PathBuf, PackageTarget)> = Vec::new();
        for c in self
            .candidates
            .iter()
            .filter(|c| c.from_source || !sources_only)
        {
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
                Some(c) if c.checksum != l.checksum => {
                    return Err(DepotError::Conflict {
                        ident: ident.clone(),
                        target: self.target.clone(),
                        paths: vec![c.origin_path(), path.to_path_buf()],
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
    fn load_request(&self, r: &Request, origin: Origin) -> Result<Loaded, DepotError> {
        let l = match r {
            Request::Ident(id) => self.find_for(id, origin)?,
            Request::Hart(p) => self.load(p)?,
        };
        if l.metadata.target != self.target {
            return Err(DepotError::TargetMismatch {
                path: l.origin_path(),
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
        let requested = self.load_requested(base, requests)?;
        self.complete(requested)
    }

    /// The first half of [`Depot::resolve_with_base`]: the requested packages themselves,
    /// verified (looked up and downloaded as needed). A caller can learn the primary
    /// package from them (say, to read a cache source named after it, then
    /// [`Depot::set_records`]) before [`Depot::complete`] loads the `base` packages and
    /// every dependency, taking recorded ones from their records.
    pub fn load_requested(
        &self,
        base: &[Request],
        requests: &[Request],
    ) -> Result<Requested, DepotError> {
        let mut c = Closure::default();
        self.add_requests(&mut c, requests, Origin::Main)?;
        Ok(Requested {
            closure: c,
            base: base.to_vec(),
        })
    }

    /// The second half of [`Depot::resolve_with_base`]: the base packages, every
    /// dependency, then the checks and the layer order.
    pub fn complete(&self, requested: Requested) -> Result<ResolvedClosure, DepotError> {
        let mut c = requested.closure;
        self.add_requests(&mut c, &requested.base, Origin::Base)?;
        self.load_dependencies(&mut c)?;
        // Cycles first: a cycle also makes TDEPS inconsistent, and the cycle says more.
        let heights = heights(&c.members)?;
        check_consistency(&c.members)?;
        Ok(ResolvedClosure {
            target: self.target.clone(),
            packages: c.ordered(&heights),
        })
    }

    /// Loads `requests` (in parallel) into `c`; one ident given twice must be one package.
    fn add_requests(
        &self,
        c: &mut Closure,
        requests: &[Request],
        origin: Origin,
    ) -> Result<(), DepotError> {
        let loaded: Vec<Loaded> = requests
            .par_iter()
            .map(|r| self.load_request(r, origin))
            .collect::<Result<_, _>>()?;
        for l in loaded {
            let id = l.metadata.ident.clone();
            if origin == Origin::Main && !c.primary.contains(&id) {
                c.primary.push(id.clone());
            }
            if let Some(existing) = c.members.get(&id.to_string())
                && existing.checksum != l.checksum
            {
                return Err(DepotError::Conflict {
                    ident: id,
                    target: self.target.clone(),
                    paths: vec![existing.origin_path(), l.origin_path()],
                });
            }
            c.add(l, origin);
        }
        Ok(())
    }

    /// Breadth-first over DEPS and TDEPS, each wave loaded in parallel; every dependency
    /// missing is reported at once, with who needs it.
    fn load_dependencies(&self, c: &mut Closure) -> Result<(), DepotError> {
        let mut missing: BTreeMap<String, Missing> = BTreeMap::new();
        let mut frontier: Vec<(PackageIdent, Origin)> = c
            .members
            .values()
            .flat_map(|l| c.deps_with_origin(l))
            .collect();
        while !frontier.is_empty() {
            // One entry per package not known yet; asked for by the requested side wins.
            let mut wave: Vec<(PackageIdent, Origin)> = Vec::new();
            for (d, o) in frontier {
                let key = d.to_string();
                if c.members.contains_key(&key) || missing.contains_key(&key) {
                    continue;
                }
                match wave.iter_mut().find(|(u, _)| *u == d) {
                    Some((_, uo)) if o == Origin::Main => *uo = Origin::Main,
                    Some(_) => {}
                    None => wave.push((d, o)),
                }
            }
            let loaded: Vec<(PackageIdent, Origin, Option<Loaded>)> = wave
                .into_par_iter()
                .map(|(d, o)| self.find_dependency(&d, o).map(|l| (d, o, l)))
                .collect::<Result<_, _>>()?;
            frontier = Vec::new();
            for (d, o, l) in loaded {
                match l {
                    Some(l) => {
                        frontier.extend(deps_of(&l).into_iter().map(|dep| (dep, o)));
                        c.add(l, o);
                    }
                    None => {
                        let needed_by = Vec::new();
                        missing.insert(
                            d.to_string(),
                            Missing {
                                ident: d,
                                needed_by,
                            },
                        );
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        for m in missing.values_mut() {
            let by = |f: &dyn Fn(&PackageMetadata) -> &Vec<PackageIdent>| -> Vec<PackageIdent> {
                c.members
                    .values()
                    .filter(|l| f(&l.metadata).contains(&m.ident))
                    .map(|l| l.metadata.ident.clone())
                    .collect()
            };
            let direct = by(&|md| &md.deps);
            m.needed_by = if direct.is_empty() {
                by(&|md| &md.tdeps)
            } else {
                direct
            };
        }
        Err(DepotError::Missing {
            missing: missing.into_values().collect(),
            searched: self.searched.clone(),
        })
    }

    /// The package with exactly this fully qualified ident, from the sources or Builder.
    pub fn find_exact(&self, ident: &PackageIdent) -> Result<Option<Loaded>, DepotError> {
        self.find_dependency(ident, Origin::Main)
    }

    /// Like [`Depot::find_exact`], but never from a record: the hart itself, for a
    /// recorded package whose layer turned out to be needed after all. As a package of the
    /// closure, with its height and whether it was requested kept.
    pub fn materialize(&self, p: &ResolvedPackage) -> Result<ResolvedPackage, DepotError> {
        // Not knowing which side asked for it, Builder's main channel first, then the base
        // packages' (the Supervisor's may come from --base-pkgs-url).
        let found = match self.find_exact_local(p.ident())? {
            Some(l) => Some(l),
            None => match self.fetch_dependency(p.ident(), Origin::Main)? {
                Some(l) => Some(l),
                None => self.fetch_dependency(p.ident(), Origin::Base)?,
            },
        };
        let l = found.ok_or_else(|| DepotError::Missing {
            missing: vec![Missing {
                ident: p.ident().clone(),
                needed_by: Vec::new(),
            }],
            searched: self.searched.clone(),
        })?;
        Ok(ResolvedPackage {
            hart: l.hart,
            checksum: l.checksum,
            metadata: l.metadata,
            height: p.height,
            requested: p.requested,
        })
    }

    /// The package with exactly this fully qualified ident, if the local sources have it.
    pub(crate) fn find_exact_local(
        &self,
        ident: &PackageIdent,
    ) -> Result<Option<Loaded>, DepotError> {
        match self.find_local(ident) {
            Ok(l) => Ok(Some(l)),
            Err(DepotError::NotFound { .. }) | Err(DepotError::OnlyOtherTargets { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The requested packages of a resolution, loaded (see [`Depot::load_requested`]), and
/// the base packages still to load.
pub struct Requested {
    closure: Closure,
    base: Vec<Request>,
}

impl Requested {
    /// The requested (primary) packages' metadata, in argument order.
    pub fn primary(&self) -> Vec<&PackageMetadata> {
        self.closure
            .primary
            .iter()
            .filter_map(|id| self.closure.members.get(&id.to_string()))
            .map(|l| &l.metadata)
            .collect()
    }
}

/// A closure being gathered: its members, which of them were asked for, and where each
/// came from (its dependencies are downloaded from the same place).
#[derive(Default)]
struct Closure {
    primary: Vec<PackageIdent>,
    members: BTreeMap<String, Loaded>,
    origins: HashMap<String, Origin>,
}

impl Closure {
    fn add(&mut self, l: Loaded, origin: Origin) {
        let key = l.metadata.ident.to_string();
        let o = self.origins.entry(key.clone()).or_insert(origin);
        if origin == Origin::Main {
            *o = Origin::Main;
        }
        self.members.insert(key, l);
    }

    fn deps_with_origin(&self, l: &Loaded) -> Vec<(PackageIdent, Origin)> {
        let o = self
            .origins
            .get(&l.metadata.ident.to_string())
            .copied()
            .unwrap_or(Origin::Main);
        deps_of(l).into_iter().map(|d| (d, o)).collect()
    }

    /// Layer order: by height (leaves first), ties by ident; the requested packages last,
    /// in argument order.
    fn ordered(self, heights: &HashMap<String, usize>) -> Vec<ResolvedPackage> {
        let primary = self.primary;
        let mut packages: Vec<ResolvedPackage> = self
            .members
            .into_values()
            .map(|l| ResolvedPackage {
                height: heights[&l.metadata.ident.to_string()],
                requested: primary.contains(&l.metadata.ident),
                hart: l.hart,
                checksum: l.checksum,
                metadata: l.metadata,
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
        packages
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
            path: l.origin_path(),
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
