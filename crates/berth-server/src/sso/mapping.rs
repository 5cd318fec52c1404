//! From the identity provider's claim to a berth tenant and role.
//!
//! Operators write rules `VALUE=TENANT:ROLE` (`--oidc-map acme-members=acme:member`,
//! `--oidc-map berth-admins=*:admin`). At login, every value of the configured claim (a string
//! or an array of strings, e.g. `groups`) is matched against the rules; the highest role of the
//! matching rules wins, the first rule given among equals. No match: the login is refused.

/// A role as the users table stores it: the domain's [`Role`](berth_domain::Role), ordered
/// `Viewer < Member < Owner < Admin`.
pub use berth_domain::Role as SsoRole;

/// Where a matching claim value puts the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `None` = server-wide (written `*`; admins only).
    pub tenant: Option<String>,
    pub role: SsoRole,
}

/// One `VALUE=TENANT:ROLE` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRule {
    pub value: String,
    pub grant: Grant,
}

impl MapRule {
    /// Parses `VALUE=TENANT:ROLE`. `TENANT` is a berth tenant name or `*`, and `*` goes with
    /// `admin` only, as `admin` goes with `*` only (an admin is server-wide).
    pub fn parse(s: &str) -> Result<Self, String> {
        let usage =
            "write VALUE=TENANT:ROLE, e.g. acme-members=acme:member or berth-admins=*:admin";
        let (value, target) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("oidc map {s:?}: {usage}"))?;
        let (tenant, role) = target
            .split_once(':')
            .ok_or_else(|| format!("oidc map {s:?}: {usage}"))?;
        if value.is_empty() {
            return Err(format!("oidc map {s:?}: the claim value is empty; {usage}"));
        }
        let role = SsoRole::parse(role).ok_or_else(|| {
            format!("oidc map {s:?}: role {role:?} is not one of admin, owner, member, viewer")
        })?;
        let tenant = match tenant {
            "*" if role == SsoRole::Admin => None,
            "*" => {
                return Err(format!(
                    "oidc map {s:?}: `*` (every tenant) is for admin only"
                ))
            }
            _ if role == SsoRole::Admin => {
                return Err(format!(
                    "oidc map {s:?}: admin is server-wide; write {value}=*:admin"
                ))
            }
            t => Some(
                berth_domain::Name::parse(t)
                    .map_err(|e| format!("oidc map {s:?}: tenant: {e}"))?
                    .to_string(),
            ),
        };
        Ok(Self {
            value: value.to_owned(),
            grant: Grant { tenant, role },
        })
    }
}

/// The claim's values: a string is one value, an array its string items; anything else none.
pub fn claim_values(claim: Option<&serde_json::Value>) -> Vec<String> {
    match claim {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The grant for these claim values: the highest role among the matching rules (the first rule
/// among equals), or `None` when nothing matches.
pub fn resolve(rules: &[MapRule], values: &[String]) -> Option<Grant> {
    let mut best: Option<&Grant> = None;
    for rule in rules {
        if values.contains(&rule.value) && best.is_none_or(|b| rule.grant.role > b.role) {
            best = Some(&rule.grant);
        }
    }
    best.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<MapRule> {
        [
            "acme-members=acme:member",
            "acme-owners=acme:owner",
            "beta-owners=beta:owner",
            "berth-admins=*:admin",
            "readers=acme:viewer",
        ]
        .iter()
        .map(|r| MapRule::parse(r).unwrap())
        .collect()
    }

    fn grant(tenant: Option<&str>, role: SsoRole) -> Option<Grant> {
        Some(Grant {
            tenant: tenant.map(str::to_owned),
            role,
        })
    }

    #[test]
    fn highest_role_wins_first_rule_among_equals() {
        let r = rules();
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            resolve(&r, &v(&["acme-members"])),
            grant(Some("acme"), SsoRole::Member)
        );
        assert_eq!(
            resolve(&r, &v(&["readers", "acme-members", "acme-owners"])),
            grant(Some("acme"), SsoRole::Owner)
        );
        assert_eq!(
            resolve(&r, &v(&["beta-owners", "acme-owners"])),
            grant(Some("acme"), SsoRole::Owner)
        );
        assert_eq!(
            resolve(&r, &v(&["acme-owners", "berth-admins"])),
            grant(None, SsoRole::Admin)
        );
        assert_eq!(resolve(&r, &v(&["other", "ACME-MEMBERS"])), None);
        assert_eq!(resolve(&r, &[]), None);
    }

    #[test]
    fn rules_parse_strictly() {
        assert_eq!(
            MapRule::parse("a=b=acme:owner").unwrap().value,
            "a=b",
            "the last `=` separates"
        );
        for bad in [
            "acme-members",
            "acme-members=acme",
            "=acme:member",
            "x=acme:root",
            "x=*:member",
            "x=acme:admin",
            "x=Not A Tenant:member",
        ] {
            assert!(MapRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn claim_values_take_strings_and_arrays() {
        use serde_json::json;
        assert_eq!(claim_values(Some(&json!("a"))), vec!["a"]);
        assert_eq!(claim_values(Some(&json!(["a", 1, "b"]))), vec!["a", "b"]);
        assert!(claim_values(Some(&json!({"a": 1}))).is_empty());
        assert!(claim_values(None).is_empty());
    }
}
