//! Splitting `registry/repository` names the way docker does: the first component is a
//! registry when it looks like a host, otherwise the name is on Docker Hub.

use crate::RegistryError;

/// A repository on a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repository {
    /// The registry as named (what credentials are looked up under and errors say).
    pub(crate) registry: String,
    /// Where its API answers (`registry-1.docker.io` for Docker Hub).
    pub(crate) host: String,
    /// The repository path inside the registry, e.g. `team/app` or `library/redis`.
    pub(crate) path: String,
}

const DOCKER_HUB: &str = "docker.io";

pub(crate) fn parse_repository(name: &str) -> Result<Repository, RegistryError> {
    let bad = |detail: &str| RegistryError::Reference {
        reference: name.to_owned(),
        detail: detail.to_owned(),
    };
    let (registry, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    if registry.is_empty()
        || !registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        return Err(bad("the registry host is not a valid host[:port]"));
    }
    if path.is_empty() {
        return Err(bad("no repository after the registry"));
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
            return Err(bad(&format!(
                "repository component '{component}' must be lowercase letters, digits and . _ - between them"
            )));
        }
    }
    let is_hub = matches!(
        registry.as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    );
    let path = if is_hub && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let host = if is_hub {
        "registry-1.docker.io".to_owned()
    } else {
        registry.clone()
    };
    Ok(Repository {
        registry,
        host,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_and_docker_hub() {
        let r = parse_repository("127.0.0.1:5000/team/app").expect("ok");
        assert_eq!(
            (r.registry.as_str(), r.host.as_str(), r.path.as_str()),
            ("127.0.0.1:5000", "127.0.0.1:5000", "team/app")
        );
        let r = parse_repository("redis").expect("ok");
        assert_eq!(
            (r.registry.as_str(), r.host.as_str(), r.path.as_str()),
            ("docker.io", "registry-1.docker.io", "library/redis")
        );
        let r = parse_repository("habitat/app").expect("ok");
        assert_eq!(r.path, "habitat/app");
        let r = parse_repository("localhost/app").expect("ok");
        assert_eq!(r.registry, "localhost");
        for bad in [
            "ghcr.io/",
            "ghcr.io/Team/app",
            "ghcr.io/a//b",
            "ghcr.io/-a",
            "a b/c",
        ] {
            assert!(parse_repository(bad).is_err(), "{bad}");
        }
    }
}
