//! Closure resolution against the upstream fixtures and generated closures.

use std::fs;
use std::path::{Path, PathBuf};

use depot::{Depot, DepotError, DepotSettings, Request};
use hab_oci_testkit::{ClosureSpec, PackageSpec, generate, write_package_dir};
use hart::{PackOptions, PackageIdent, SecretKey};

fn fixtures(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(sub)
}

fn depot(sources: &[&Path]) -> Depot {
    Depot::open(&DepotSettings {
        sources: sources.iter().map(|p| p.to_path_buf()).collect(),
        ..DepotSettings::default()
    })
    .expect("open depot")
}

fn ident(s: &str) -> PackageIdent {
    PackageIdent::parse(s).expect("ident")
}

fn req(s: &str) -> Request {
    Request::parse(s).expect("request")
}

#[test]
fn picks_latest_oddversion() {
    let d = depot(&[&fixtures("builder")]);
    let c = d.resolve(&[req("neurosis/oddversion6")]).expect("resolves");
    assert_eq!(c.packages.len(), 1);
    assert_eq!(
        c.packages[0].ident().to_string(),
        "neurosis/oddversion6/2.0/20190513194234"
    );
    let c = d
        .resolve(&[req("neurosis/oddversion6/1.2.3")])
        .expect("resolves");
    assert_eq!(
        c.packages[0].ident().to_string(),
        "neurosis/oddversion6/1.2.3/20190513194138"
    );
}

#[test]
fn testapp3_reports_exactly_the_missing_core_deps() {
    let d = depot(&[&fixtures("builder")]);
    let err = d
        .resolve(&[req("neurosis/testapp3")])
        .expect_err("deps are missing");
    let DepotError::Missing { missing, .. } = &err else {
        panic!("{err}")
    };
    let names: Vec<String> = missing.iter().map(|m| m.ident.short()).collect();
    assert_eq!(names, vec!["core/glibc", "core/linux-headers"]);
    for m in missing {
        assert!(m.ident.fully_qualified());
        assert!(!m.needed_by.is_empty());
    }
    let msg = err.to_string();
    assert!(msg.starts_with("2 dependencies are missing"), "{msg}");
}

#[test]
fn windows_hart_is_a_target_mismatch() {
    let d = depot(&[&fixtures("builder")]);
    let path = fixtures("builder/neurosis-testapp-0.1.4-20181115124506-x86_64-windows.hart");
    let err = d.resolve(&[Request::Hart(path)]).expect_err("wrong target");
    assert!(matches!(err, DepotError::TargetMismatch { .. }), "{err}");
    assert!(err.to_string().contains("x86_64-windows"), "{err}");
}

#[test]
fn unknown_key_is_reported_for_the_pick() {
    let d = depot(&[&fixtures("builder")]);
    // The latest Linux testapp (0.1.4/20171206004139) is signed by a key that is not here.
    let err = d
        .resolve(&[req("neurosis/testapp")])
        .expect_err("unknown key");
    let msg = err.to_string();
    assert!(msg.contains("neurosis-20171205003147.pub"), "{msg}");
}

fn small_closure(dir: &Path, packages: usize) -> hab_oci_testkit::Closure {
    let spec = ClosureSpec {
        packages,
        total_size: 200 * 1024,
        block_size: 16 * 1024,
        ..ClosureSpec::default()
    };
    generate(&spec, dir, None).expect("generate")
}

#[test]
fn generated_closure_in_layer_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let closure = small_closure(tmp.path(), 12);
    let d = depot(&[tmp.path()]);
    let c = d.resolve(&[req("gen/app")]).expect("resolves");
    assert_eq!(c.packages.len(), 12);
    let order: Vec<&PackageIdent> = c.packages.iter().map(|p| p.ident()).collect();
    assert_eq!(order.last().copied(), Some(closure.primary()));
    // Dependencies always come before their dependents; heights never go down.
    for (i, p) in c.packages.iter().enumerate() {
        for dep in &p.metadata.deps {
            let j = order
                .iter()
                .position(|o| *o == dep)
                .expect("dep in closure");
            assert!(j < i, "{dep} after {}", p.ident());
        }
        if i > 0 && !p.requested {
            assert!(c.packages[i - 1].height <= p.height);
        }
    }
    // Same input, same order.
    let again = depot(&[tmp.path()])
        .resolve(&[req("gen/app")])
        .expect("resolves");
    let order2: Vec<&PackageIdent> = again.packages.iter().map(|p| p.ident()).collect();
    assert_eq!(order, order2);
}

#[test]
fn requested_packages_last_in_argument_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    small_closure(tmp.path(), 6);
    let d = depot(&[tmp.path()]);
    let c = d
        .resolve(&[req("gen/lib001"), req("gen/app"), req("gen/lib000")])
        .expect("resolves");
    let n = c.packages.len();
    let tail: Vec<String> = c.packages[n - 3..]
        .iter()
        .map(|p| p.ident().name.clone())
        .collect();
    assert_eq!(tail, vec!["lib001", "app", "lib000"]);
}

#[test]
fn all_missing_listed_at_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let closure = small_closure(tmp.path(), 8);
    let gone: Vec<&PackageIdent> = vec![&closure.packages[0].ident, &closure.packages[2].ident];
    for g in &gone {
        let name = g
            .archive_name(&hart::PackageTarget::host_linux())
            .expect("fq");
        fs::remove_file(tmp.path().join("artifacts").join(name)).expect("rm");
    }
    let err = depot(&[tmp.path()])
        .resolve(&[req("gen/app")])
        .expect_err("missing");
    let DepotError::Missing { missing, .. } = err else {
        panic!("{err}")
    };
    let mut want: Vec<String> = gone.iter().map(|g| g.to_string()).collect();
    want.sort();
    assert_eq!(
        missing
            .iter()
            .map(|m| m.ident.to_string())
            .collect::<Vec<_>>(),
        want
    );
}

#[test]
fn two_different_harts_for_one_ident_conflict() {
    let tmp = tempfile::tempdir().expect("tmp");
    let closure = small_closure(&tmp.path().join("a"), 3);
    // Re-pack lib000 with other content into a second source.
    let mut spec = closure.packages[0].clone();
    spec.seed += 99;
    let work = tempfile::tempdir().expect("tmp");
    let dir = write_package_dir(work.path(), &spec).expect("write");
    hart::pack(
        &dir,
        &closure.key,
        None,
        &tmp.path().join("b"),
        &PackOptions::default(),
    )
    .expect("pack");
    let d = depot(&[&tmp.path().join("a"), &tmp.path().join("b")]);
    let err = d.resolve(&[req("gen/app")]).expect_err("conflict");
    assert!(matches!(err, DepotError::Conflict { .. }), "{err}");
}

fn pack_raw(root: &Path, key: &SecretKey, out: &Path, id: &str, deps: &[&str], tdeps: &[&str]) {
    let ident = ident(id);
    let spec = PackageSpec {
        ident: ident.clone(),
        deps: deps.iter().map(|d| self::ident(d)).collect(),
        tdeps: tdeps.iter().map(|d| self::ident(d)).collect(),
        size: 100,
        service: false,
        seed: 1,
    };
    let dir = write_package_dir(root, &spec).expect("write");
    if deps.is_empty() && !tdeps.is_empty() {
        fs::write(dir.join("TDEPS"), tdeps.join("\n")).expect("tdeps");
    }
    hart::pack(&dir, key, None, out, &PackOptions::default()).expect("pack");
}

#[test]
fn cycles_and_inconsistent_deps_are_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let key = SecretKey::generate("cyc").expect("key");
    key.write_pair(&tmp.path().join("src/keys")).expect("keys");
    let out = tmp.path().join("src/artifacts");
    let (a, b) = ("cyc/a/1.0/20240101000000", "cyc/b/1.0/20240101000000");
    pack_raw(tmp.path(), &key, &out, a, &[b], &[b]);
    pack_raw(tmp.path(), &key, &out, b, &[a], &[a]);
    let err = depot(&[&tmp.path().join("src")])
        .resolve(&[req("cyc/a")])
        .expect_err("cycle");
    assert!(matches!(err, DepotError::Cycle(_)), "{err}");
    assert!(
        err.to_string()
            .contains("cyc/a/1.0/20240101000000 -> cyc/b"),
        "{err}"
    );

    let (c, d) = ("cyc/c/1.0/20240101000000", "cyc/d/1.0/20240101000000");
    pack_raw(tmp.path(), &key, &out, d, &[], &[]);
    pack_raw(tmp.path(), &key, &out, c, &[d], &[d]);
    // DEPS naming a package TDEPS lacks.
    let e = "cyc/e/1.0/20240101000000";
    let spec = PackageSpec {
        ident: ident(e),
        deps: vec![ident(d)],
        tdeps: vec![ident(c)],
        size: 10,
        service: false,
        seed: 2,
    };
    let dir = write_package_dir(tmp.path(), &spec).expect("write");
    hart::pack(&dir, &key, None, &out, &PackOptions::default()).expect("pack");
    let err = depot(&[&tmp.path().join("src")])
        .resolve(&[req("cyc/e")])
        .expect_err("inconsistent");
    assert!(
        err.to_string()
            .contains("DEPS lists cyc/d/1.0/20240101000000, which TDEPS does not"),
        "{err}"
    );
}
