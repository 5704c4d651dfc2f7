//! A repository name as the distribution API needs it: the registry, where its API answers,
//! and the path. The grammar is `oci_image::reference` (one for the whole workspace).

use oci_image::reference::Reference;

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

pub(crate) fn parse_repository(name: &str) -> Result<Repository, RegistryError> {
    let r = Reference::parse(name).map_err(|e| RegistryError::Reference {
        reference: name.to_owned(),
        detail: e.problem,
    })?;
    if r.tag.is_some() || r.digest.is_some() {
        return Err(RegistryError::Reference {
            reference: name.to_owned(),
            detail: "a repository name holds no tag or digest".into(),
        });
    }
    Ok(Repository {
        host: r.api_host().to_owned(),
        registry: r.registry,
        path: r.path,
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
