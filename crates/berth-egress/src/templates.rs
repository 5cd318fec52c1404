//! The built-in egress templates: named rule lists every tenant may attach to its workspaces,
//! for the package registries and code hosts agents usually need. They are read-only and
//! live here only (never in the database), so a new berth version updates them everywhere;
//! their names are reserved (a tenant cannot create a template of the same name).
//!
//! A workspace's effective policy is its own rules first, then each attached template's
//! rules in attach order; the first match wins and anything unmatched is denied (see
//! [`crate::Policy`]).

/// One built-in template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinTemplate {
    pub name: &'static str,
    pub description: &'static str,
    /// Rules in the syntax of [`crate::Rule::parse`], in their canonical form.
    pub rules: &'static [&'static str],
}

/// Every built-in template, by name.
pub const BUILTIN_TEMPLATES: &[BuiltinTemplate] = &[
    BuiltinTemplate {
        name: "crates",
        description: "Rust crates: crates.io, its sparse index and downloads",
        rules: &[
            "allow crates.io:443",
            "allow index.crates.io:443",
            "allow static.crates.io:443",
        ],
    },
    BuiltinTemplate {
        name: "debian",
        description: "Debian packages and security updates (apt, http and https)",
        rules: &[
            "allow deb.debian.org:80",
            "allow deb.debian.org:443",
            "allow security.debian.org:80",
            "allow security.debian.org:443",
        ],
    },
    BuiltinTemplate {
        name: "github",
        description: "GitHub: git over HTTPS, the API, archives and raw files",
        rules: &[
            "allow github.com:443",
            "allow api.github.com:443",
            "allow codeload.github.com:443",
            "allow objects.githubusercontent.com:443",
            "allow raw.githubusercontent.com:443",
        ],
    },
    BuiltinTemplate {
        name: "npm",
        description: "The npm registry",
        rules: &["allow registry.npmjs.org:443"],
    },
    BuiltinTemplate {
        name: "pypi",
        description: "PyPI: the index and package files",
        rules: &["allow pypi.org:443", "allow files.pythonhosted.org:443"],
    },
];

/// The built-in template of this name.
pub fn builtin_template(name: &str) -> Option<&'static BuiltinTemplate> {
    BUILTIN_TEMPLATES.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attempt, Policy, Rule};

    #[test]
    fn builtins_parse_in_canonical_form_and_are_sorted_unique() {
        for t in BUILTIN_TEMPLATES {
            assert!(!t.rules.is_empty(), "{}", t.name);
            assert!(!t.description.is_empty(), "{}", t.name);
            assert!(
                t.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                t.name
            );
            for r in t.rules {
                assert_eq!(Rule::parse(r).unwrap().to_string(), *r, "{}", t.name);
            }
        }
        let names: Vec<_> = BUILTIN_TEMPLATES.iter().map(|t| t.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn builtins_allow_what_they_name_and_nothing_else() {
        let policy = |name: &str| {
            Policy::new(
                builtin_template(name)
                    .unwrap()
                    .rules
                    .iter()
                    .map(|r| Rule::parse(r).unwrap())
                    .collect(),
            )
        };
        let allows = |p: &Policy, host: &str, port: u16| {
            p.decide(&Attempt {
                host: host.into(),
                port,
                method: None,
                path: None,
            })
            .allow
        };
        let npm = policy("npm");
        assert!(allows(&npm, "registry.npmjs.org", 443));
        assert!(!allows(&npm, "registry.npmjs.org", 80));
        assert!(!allows(&npm, "evil.npmjs.org", 443));
        let debian = policy("debian");
        assert!(allows(&debian, "deb.debian.org", 80));
        assert!(allows(&debian, "security.debian.org", 443));
        assert!(!allows(&debian, "debian.org", 443));
        assert!(allows(&policy("crates"), "index.crates.io", 443));
        assert!(allows(&policy("pypi"), "files.pythonhosted.org", 443));
        assert!(allows(&policy("github"), "codeload.github.com", 443));
        assert!(!allows(&policy("github"), "gist.github.com", 443));
        assert!(builtin_template("NPM").is_none());
        assert!(builtin_template("ci").is_none());
    }
}
