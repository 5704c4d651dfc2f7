//! Image name and tags from Habitat's templates and flags (notes §1.8), with the intended
//! flag behaviour (all three standard tags by default; each `--no-tag-X` removes one).
//!
//! Templates are rendered by hand on purpose: Habitat's are Handlebars, but only variable
//! substitution (`{{pkg_name}}`, `{{{pkg_name}}}`) is meaningful for names and tags; unknown
//! variables render empty as in Handlebars' non-strict mode, and syntax errors are reported
//! before any package work starts.

use hart::PackageIdent;

use crate::ExportError;
use oci_image::reference::Reference;

/// Naming flags as given.
#[derive(Debug, Clone, Default)]
pub struct NamingOptions {
    pub image_name: Option<String>,
    pub registry_url: Option<String>,
    pub tag_latest: bool,
    pub tag_version: bool,
    pub tag_version_release: bool,
    pub tag_custom: Option<String>,
    pub channel: String,
}

/// The rendered name and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub name: String,
    pub tags: Vec<String>,
}

impl Naming {
    /// `name:tag` for each tag.
    pub fn references(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|t| format!("{}:{t}", self.name))
            .collect()
    }
}

/// Checks a template's syntax without rendering it.
pub fn check_template(template: &str) -> Result<(), ExportError> {
    render(template, &|_| None).map(|_| ())
}

fn render(template: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<String, ExportError> {
    let err = |problem: &str| ExportError::Template {
        template: template.to_owned(),
        problem: problem.to_owned(),
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let (open, close) = if after.starts_with("{{{") {
            ("{{{", "}}}")
        } else {
            ("{{", "}}")
        };
        let inner_start = &after[open.len()..];
        let end = inner_start
            .find(close)
            .ok_or_else(|| err("'{{' is never closed"))?;
        let name = inner_start[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(&format!("'{name}' is not a variable name")));
        }
        out.push_str(&var(name).unwrap_or_default());
        rest = &inner_start[end + close.len()..];
    }
    if rest.contains("}}") {
        return Err(err("'}}' without a matching '{{'"));
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders the name (with the registry prefix) and the tags for the primary package.
pub fn naming(opts: &NamingOptions, primary: &PackageIdent) -> Result<Naming, ExportError> {
    let version = primary.version.clone().unwrap_or_default();
    let release = primary.release.clone().unwrap_or_default();
    let var = |n: &str| -> Option<String> {
        Some(match n {
            "pkg_origin" => primary.origin.clone(),
            "pkg_name" => primary.name.clone(),
            "pkg_version" => version.clone(),
            "pkg_release" => release.clone(),
            "channel" => opts.channel.clone(),
            _ => return None,
        })
    };
    let template = opts
        .image_name
        .as_deref()
        .unwrap_or("{{pkg_origin}}/{{pkg_name}}");
    let mut name = render(template, &var)?.to_lowercase();
    if let Some(reg) = &opts.registry_url {
        name = format!("{}/{name}", reg.trim_end_matches('/'));
    }
    let mut tags = Vec::new();
    if opts.tag_latest {
        tags.push("latest".to_owned());
    }
    if opts.tag_version {
        tags.push(version.to_lowercase());
    }
    if opts.tag_version_release {
        tags.push(format!("{version}-{release}").to_lowercase());
    }
    if let Some(c) = &opts.tag_custom {
        let t = render(c, &var)?.to_lowercase();
        if !t.is_empty() {
            tags.push(t);
        }
    }
    if tags.is_empty() {
        return Err(ExportError::NoTags);
    }
    let mut seen = Vec::new();
    tags.retain(|t| {
        let new = !seen.contains(t);
        seen.push(t.clone());
        new
    });
    validate_reference(&name, &tags)?;
    Ok(Naming { name, tags })
}

/// Splits an image reference `name[:tag][@digest]` and checks it: `(name, tag, digest)`.
pub fn parse_reference(r: &str) -> Result<(String, Option<String>, Option<String>), ExportError> {
    let parsed = Reference::parse(r).map_err(|e| ExportError::Plan(e.to_string()))?;
    Ok((parsed.name, parsed.tag, parsed.digest))
}

pub use oci_image::reference::registry_of;

/// The image name and its tags, by docker's grammar (`oci_image::reference`).
fn validate_reference(name: &str, tags: &[String]) -> Result<(), ExportError> {
    let parsed =
        Reference::parse(name).map_err(|e| ExportError::Plan(format!("image name {e}")))?;
    if parsed.tag.is_some() || parsed.digest.is_some() {
        return Err(ExportError::Plan(format!(
            "image name '{name}' holds a tag or digest; tags are given separately"
        )));
    }
    for t in tags {
        oci_image::reference::check_tag(t).map_err(ExportError::Plan)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> NamingOptions {
        NamingOptions {
            tag_latest: true,
            tag_version: true,
            tag_version_release: true,
            channel: "base".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_flags() {
        let p = PackageIdent::parse("Core/Redis/7.2.4/20240101000000");
        assert!(p.is_err(), "origins are lowercase");
        let p = PackageIdent::parse("core/Redis/7.2.4/20240101000000").expect("ident");
        let n = naming(&opts(), &p).expect("naming");
        assert_eq!(n.name, "core/redis");
        assert_eq!(n.tags, vec!["latest", "7.2.4", "7.2.4-20240101000000"]);
        let o = NamingOptions {
            tag_latest: false,
            registry_url: Some("registry.example.com:5000/team".into()),
            tag_custom: Some("{{channel}}-{{ pkg_version }}{{unknown}}".into()),
            image_name: Some("{{{pkg_name}}}-img".into()),
            ..opts()
        };
        let n = naming(&o, &p).expect("naming");
        assert_eq!(n.name, "registry.example.com:5000/team/redis-img");
        assert_eq!(n.tags, vec!["7.2.4", "7.2.4-20240101000000", "base-7.2.4"]);
    }

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("127.0.0.1:5000/team/app:v1").expect("ok"),
            ("127.0.0.1:5000/team/app".into(), Some("v1".into()), None)
        );
        assert_eq!(
            parse_reference("127.0.0.1:5000/team/app").expect("ok"),
            ("127.0.0.1:5000/team/app".into(), None, None)
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse_reference(&format!("app@{d}")).expect("ok").2, Some(d));
        for bad in ["Team/App", "app:", "app:-x", "app@sha256:zz", "", "a//b"] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(registry_of("ghcr.io/a/b"), "ghcr.io");
        assert_eq!(registry_of("a/b"), "docker.io");
    }

    #[test]
    fn template_errors_are_early_and_clear() {
        assert!(check_template("{{pkg_name").is_err());
        assert!(check_template("{{pkg name}}").is_err());
        assert!(check_template("a}}").is_err());
        assert!(check_template("{{pkg_name}}-x").is_ok());
        let p = PackageIdent::parse("core/redis/1/2").expect("ident");
        let bad = NamingOptions {
            tag_custom: Some("has space".into()),
            ..opts()
        };
        assert!(naming(&bad, &p).is_err());
    }
}
