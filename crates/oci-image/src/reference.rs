//! Image references — `[HOST[:PORT]/]PATH[:TAG][@DIGEST]` — parsed once, by docker's rules:
//! the export's names and tags, the engines' cache references and the registry client all
//! use this grammar. Hand-written because oci-spec's `Reference` (distribution's regular
//! expression) accepts no IPv6 host (`[::1]:5000/app`) and fills in a `latest` tag
//! we must not invent; the rules are distribution/reference's (`normalize.go`, `regexp.go`).

/// Docker Hub as users name it (`docker.io/...` or no host at all).
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry as written (`host[:port]`), `docker.io` when the name has none.
    pub registry: String,
    /// The repository path inside the registry (`team/app`; `library/redis` on Docker Hub).
    pub path: String,
    /// The name as written, without tag or digest (`ghcr.io/team/app`, `redis`).
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Why a reference is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{reference}' is not a valid image reference: {problem}")]
pub struct ReferenceError {
    pub reference: String,
    pub problem: String,
}

impl Reference {
    /// Parses `reference` (a tag and a digest are both optional).
    pub fn parse(reference: &str) -> Result<Reference, ReferenceError> {
        let bad = |problem: String| ReferenceError {
            reference: reference.to_owned(),
            problem,
        };
        let (rest, digest) = match reference.split_once('@') {
            Some((n, d)) => {
                check_digest(d).map_err(bad)?;
                (n, Some(d.to_owned()))
            }
            None => (reference, None),
        };
        // A tag is what follows the last ':' after the last '/' (a ':' before it is a port).
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') && !t.contains(']') => (n, Some(t.to_owned())),
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            check_tag(t).map_err(bad)?;
        }
        let (registry, path) = split_registry(name);
        check_host(registry).map_err(bad)?;
        check_path(path).map_err(bad)?;
        let is_hub = matches!(
            registry,
            DOCKER_HUB | "index.docker.io" | "registry-1.docker.io"
        );
        let path = if is_hub && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        Ok(Reference {
            registry: registry.to_owned(),
            path,
            name: name.to_owned(),
            tag,
            digest,
        })
    }

    /// Where the registry's API answers (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    pub fn is_docker_hub(&self) -> bool {
        matches!(
            self.registry.as_str(),
            DOCKER_HUB | "index.docker.io" | "registry-1.docker.io"
        )
    }
}

/// The registry of an image name: its first component when that looks like a host (has a
/// `.` or a `:`, is `localhost`, or is a bracketed IPv6 address), else Docker Hub.
pub fn registry_of(name: &str) -> String {
    split_registry(name).0.to_owned()
}

fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('[') =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

/// Is `host[:port]` a loopback address, which docker treats as an insecure registry?
pub fn is_loopback(host: &str) -> bool {
    // A port follows a host name or a bracketed IPv6 address, never a bare IPv6 one.
    let h = match host.rsplit_once(':') {
        Some((h, p))
            if p.bytes().all(|b| b.is_ascii_digit()) && (h.ends_with(']') || !h.contains(':')) =>
        {
            h
        }
        _ => host,
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("registry host '{host}' has no closing ']'"));
        };
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
        {
            return Err(format!("'{addr}' is not an IPv6 address"));
        }
        match after {
            "" => return Ok(()),
            p => (
                None,
                Some(p.strip_prefix(':').ok_or("junk after ']'".to_owned())?),
            ),
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("registry port '{p}' is not a number"));
    }
    if let Some(n) = name {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !n.split('.').all(label_ok) {
            return Err(format!("registry host '{host}' is not a valid host[:port]"));
        }
    }
    Ok(())
}

/// Path components: lowercase letters and digits, separated by `.`, `_`, `__` or dashes.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("no repository name".into());
    }
    if path.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    for component in path.split('/') {
        let ok = !component.is_empty()
            && component
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && component
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && component
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "repository component '{component}' must be lowercase letters and digits, with . _ - only between them"
            ));
        }
    }
    Ok(())
}

/// Tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("tag '{tag}' is not a valid tag"))
    }
}

fn check_digest(d: &str) -> Result<(), String> {
    let ok = d.split_once(':').is_some_and(|(alg, hex)| {
        !alg.is_empty() && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if ok {
        Ok(())
    } else {
        Err(format!("'{d}' is not a digest (algorithm:hex)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(r: &str) -> (String, String, Option<String>) {
        let r = Reference::parse(r).expect(r);
        (r.registry, r.path, r.tag)
    }

    #[test]
    fn hosts_paths_tags_digests() {
        assert_eq!(
            parts("127.0.0.1:5000/team/app:v1"),
            (
                "127.0.0.1:5000".into(),
                "team/app".into(),
                Some("v1".into())
            )
        );
        assert_eq!(
            parts("redis"),
            ("docker.io".into(), "library/redis".into(), None)
        );
        assert_eq!(parts("habitat/app").1, "habitat/app");
        assert_eq!(parts("localhost/app").0, "localhost");
        // The case the two grammars this replaced disagreed on.
        assert_eq!(
            parts("[::1]:5000/app:1"),
            ("[::1]:5000".into(), "app".into(), Some("1".into()))
        );
        assert_eq!(parts("[::1]/app").0, "[::1]");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/a/b:t@{d}")).expect("ok");
        assert_eq!(
            (r.name.as_str(), r.tag.as_deref(), r.digest),
            ("ghcr.io/a/b", Some("t"), Some(d))
        );
        assert_eq!(
            Reference::parse("redis").expect("ok").api_host(),
            "registry-1.docker.io"
        );
        for bad in [
            "",
            "Team/App",
            "app:",
            "app:-x",
            "app@sha256:zz",
            "a//b",
            "ghcr.io/",
            "ghcr.io/Team/app",
            "ghcr.io/-a",
            "a b/c",
            "[::1/app",
            "[zz]:5000/app",
            "host:port/app",
            "-host.io/app",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registries_and_loopback() {
        assert_eq!(registry_of("ghcr.io/a/b"), "ghcr.io");
        assert_eq!(registry_of("a/b"), "docker.io");
        assert_eq!(registry_of("[::1]:5000/a"), "[::1]:5000");
        for h in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "ghcr.io",
            "10.0.0.1:5000",
            "example.com:127",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
