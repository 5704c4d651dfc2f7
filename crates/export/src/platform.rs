//! Habitat targets and the image platforms they map to: the one place that says which
//! targets make images, for the plan, the cache sources and the `--platform` flag.

use hart::PackageTarget;
pub use oci_image::Platform;

use crate::ExportError;

/// The platform of a Habitat target's images; `None` for a target that has none.
pub fn of(target: &PackageTarget) -> Option<Platform> {
    let (architecture, variant) = match target.as_str() {
        "x86_64-linux" | "x86_64-linux-kernel2" => ("amd64", None),
        // Docker and the registries name 64-bit ARM `linux/arm64/v8`.
        "aarch64-linux" => ("arm64", Some("v8")),
        _ => return None,
    };
    Some(Platform {
        os: "linux".into(),
        architecture: architecture.into(),
        variant: variant.map(str::to_owned),
    })
}

/// [`of`], or the error that says the target makes no images.
pub fn required(target: &PackageTarget) -> Result<Platform, ExportError> {
    of(target).ok_or_else(|| ExportError::NoPlatform {
        target: target.to_string(),
    })
}

/// The Habitat target of a Docker-style platform (`linux/amd64`, `linux/arm64`,
/// `linux/arm64/v8`); `None` for one Habitat builds no packages for.
pub fn target_of(platform: &str) -> Option<PackageTarget> {
    let target = match platform.trim() {
        "linux/amd64" | "linux/x86_64" | "linux/amd64/v1" => "x86_64-linux",
        "linux/arm64" | "linux/arm64/v8" | "linux/aarch64" => "aarch64-linux",
        _ => return None,
    };
    PackageTarget::parse(target).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_platforms_map_both_ways() {
        for (platform, target, shown) in [
            ("linux/amd64", "x86_64-linux", "linux/amd64"),
            ("linux/arm64", "aarch64-linux", "linux/arm64/v8"),
            ("linux/arm64/v8", "aarch64-linux", "linux/arm64/v8"),
        ] {
            let t = target_of(platform).expect(platform);
            assert_eq!(t.as_str(), target);
            assert_eq!(of(&t).expect("platform").to_string(), shown);
        }
        assert!(target_of("linux/s390x").is_none());
        assert!(target_of("windows/amd64").is_none());
        assert!(of(&PackageTarget::parse("x86_64-windows").expect("t")).is_none());
    }
}
