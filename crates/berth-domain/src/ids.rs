//! Opaque identifiers. Each carries a short type prefix (`ws_`, `tn_`, `tok_`) so an id pasted into
//! the wrong place is recognisable, and sorts by creation time (UUIDv7).

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id prefix, including the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Accepts a string that looks like an id of this type.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                (rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| Self(s.to_owned()))
            }

            /// Wraps a value read back from storage without checking it.
            pub fn from_stored(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Compares with an id's text (where a wire or a test holds it as a string).
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(WorkspaceId, "ws_");
id_type!(TenantId, "tn_");
id_type!(TokenId, "tok_");
id_type!(TaskId, "tk_");
id_type!(AccessRequestId, "ar_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_and_parse_round_trip() {
        let id = WorkspaceId::generate();
        assert!(id.as_str().starts_with("ws_"));
        assert_eq!(WorkspaceId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(TenantId::parse(id.as_str()), None);
        assert_eq!(WorkspaceId::parse("ws_xyz"), None);
        assert_eq!(WorkspaceId::parse("acme-web"), None);
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = TokenId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = TokenId::generate();
        assert!(a < b);
    }
}
