//! A wrapper that keeps secret values out of logs and debug output.

/// A secret string. `Debug` and `Display` print `***`; the value is reachable only through
/// [`Secret::expose`], which makes every use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How a workspace gets a tenant secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecretDelivery {
    /// A placeholder in the environment; berth's egress proxy swaps the real value into requests
    /// to the secret's hosts. The real value never enters the workspace.
    #[default]
    Placeholder,
    /// The real value in the environment (exposed to everything in the workspace).
    Env,
    /// The real value in a file under `/run/berth/secrets` (exposed likewise).
    File,
}

impl SecretDelivery {
    pub const ALL: [SecretDelivery; 3] = [Self::Placeholder, Self::Env, Self::File];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placeholder => "placeholder",
            Self::Env => "env",
            Self::File => "file",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Whether the real value enters the workspace.
    pub fn exposes(self) -> bool {
        self != Self::Placeholder
    }
}

impl std::fmt::Display for SecretDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn deliveries_round_trip_and_only_placeholders_stay_hidden() {
        for d in SecretDelivery::ALL {
            assert_eq!(SecretDelivery::parse(d.as_str()), Some(d));
        }
        assert_eq!(SecretDelivery::parse("Env"), None);
        assert_eq!(SecretDelivery::default(), SecretDelivery::Placeholder);
        assert!(!SecretDelivery::Placeholder.exposes());
        assert!(SecretDelivery::Env.exposes() && SecretDelivery::File.exposes());
    }
}
