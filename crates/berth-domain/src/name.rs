//! Names of tenants and workspaces, and how a user refers to a workspace.

use serde::{Deserialize, Serialize};

/// Longest accepted name. Names end up in container and volume names, so they stay short.
pub const MAX_NAME_LEN: usize = 40;

/// A tenant or workspace name: lowercase letters, digits and inner dashes, 1 to 40 characters,
/// starting with a letter. Safe to embed in container, volume and host directory names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name {0:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error("name {0:?} must start with a lowercase letter and contain only a-z, 0-9 and '-' (not at the end)")]
    Invalid(String),
}

impl Name {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.to_owned()));
        }
        let bytes = s.as_bytes();
        let ok_start = bytes[0].is_ascii_lowercase();
        let ok_end = bytes[bytes.len() - 1] != b'-';
        let ok_chars = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if ok_start && ok_end && ok_chars && !s.contains("--") {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Invalid(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a user names a workspace: `tenant/name`, a bare `name` (valid when only one tenant has a
/// workspace of that name), or its id `ws_…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceRef {
    Id(crate::WorkspaceId),
    Qualified { tenant: Name, name: Name },
    Bare(Name),
}

impl WorkspaceRef {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if let Some(id) = crate::WorkspaceId::parse(s) {
            return Ok(Self::Id(id));
        }
        match s.split_once('/') {
            Some((tenant, name)) => Ok(Self::Qualified {
                tenant: Name::parse(tenant)?,
                name: Name::parse(name)?,
            }),
            None => Ok(Self::Bare(Name::parse(s)?)),
        }
    }
}

impl std::fmt::Display for WorkspaceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Qualified { tenant, name } => write!(f, "{tenant}/{name}"),
            Self::Bare(name) => write!(f, "{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_like_names() {
        for ok in ["a", "acme", "acme-web", "web2", "a1-b2-c3"] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(Name::parse(""), Err(NameError::Empty));
        for bad in [
            "Acme", "1abc", "-a", "a-", "a--b", "a_b", "a b", "a/b", "ä", "../x",
        ] {
            assert!(
                matches!(Name::parse(bad), Err(NameError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Name::parse(&"a".repeat(41)),
            Err(NameError::TooLong(_))
        ));
        assert!(Name::parse(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn parses_workspace_refs() {
        assert_eq!(
            WorkspaceRef::parse("acme/web").unwrap(),
            WorkspaceRef::Qualified {
                tenant: Name::parse("acme").unwrap(),
                name: Name::parse("web").unwrap()
            }
        );
        assert_eq!(
            WorkspaceRef::parse("web").unwrap(),
            WorkspaceRef::Bare(Name::parse("web").unwrap())
        );
        let id = crate::WorkspaceId::generate();
        assert_eq!(
            WorkspaceRef::parse(id.as_str()).unwrap(),
            WorkspaceRef::Id(id)
        );
        assert!(WorkspaceRef::parse("acme/").is_err());
        assert!(WorkspaceRef::parse("a/b/c").is_err());
    }
}
