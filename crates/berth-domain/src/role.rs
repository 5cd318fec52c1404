//! Who may do what: the four roles of a token and the three permissions a tenant route needs.
//!
//! Roles are ordered (`viewer < member < owner < admin`): a role holds every permission of the
//! roles below it. An admin token is server-wide; the others belong to one tenant.

use serde::{Deserialize, Serialize};

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only in its tenant: tasks, sessions (watch only), logs, usage, audit.
    Viewer,
    /// Creates and uses workspaces, sessions and tasks in its tenant; reads egress logs and usage.
    Member,
    /// Everything in its tenant: egress rules and templates, secrets, budgets, members' tokens.
    Owner,
    /// Everything on the server: all tenants, quotas, images, backups, `network: bridge`.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Owner, Role::Admin];

    /// The wire form, e.g. `member`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Owner => "owner",
            Self::Admin => "admin",
        }
    }

    /// The role named `s` (exactly the wire form), or `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role holds `p`.
    pub fn allows(self, p: Permission) -> bool {
        self >= p.min_role()
    }

    /// Whether a token of this role may create or revoke tokens of role `other`: an admin any,
    /// an owner those up to owner (in its own tenant), nobody else any.
    pub fn may_grant(self, other: Role) -> bool {
        match self {
            Self::Admin => true,
            Self::Owner => other <= Self::Owner,
            Self::Member | Self::Viewer => false,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route of a tenant asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Look: lists, details, logs, event streams, usage, audit, watching a session.
    Read,
    /// Work: create, start and stop workspaces, exec, sessions with input, tasks.
    Operate,
    /// Govern the tenant: egress rules and templates, secrets, budgets, tokens, removing
    /// workspaces.
    Manage,
}

impl Permission {
    /// The lowest role holding this permission.
    pub fn min_role(self) -> Role {
        match self {
            Self::Read => Role::Viewer,
            Self::Operate => Role::Member,
            Self::Manage => Role::Owner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_their_wire_form() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse(""), None);
        assert!(Role::Viewer < Role::Member && Role::Member < Role::Owner);
        assert!(Role::Owner < Role::Admin);
    }

    #[test]
    fn permissions_by_role() {
        use Permission::*;
        let table = [
            (Role::Viewer, [true, false, false]),
            (Role::Member, [true, true, false]),
            (Role::Owner, [true, true, true]),
            (Role::Admin, [true, true, true]),
        ];
        for (role, expected) in table {
            for (p, e) in [Read, Operate, Manage].into_iter().zip(expected) {
                assert_eq!(role.allows(p), e, "{role} {p:?}");
            }
        }
    }

    #[test]
    fn only_admins_grant_admin_and_only_owners_grant_at_all() {
        assert!(Role::Admin.may_grant(Role::Admin));
        assert!(Role::Owner.may_grant(Role::Owner));
        assert!(Role::Owner.may_grant(Role::Viewer));
        assert!(!Role::Owner.may_grant(Role::Admin));
        for r in Role::ALL {
            assert!(!Role::Member.may_grant(r));
            assert!(!Role::Viewer.may_grant(r));
        }
    }
}
