//! Per-tenant quotas and the arithmetic that checks a request against them.
//!
//! A quota caps what a tenant holds at once: workspaces that exist, the memory and CPUs of its
//! active (running or starting) workspaces, and its unfinished tasks. Unset fields are no limit.

use crate::limits::{format_cpus, format_memory};

/// The limits an admin set for a tenant (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub max_workspaces: Option<u32>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub max_tasks: Option<u32>,
}

/// What a tenant holds now, or what one request adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUse {
    pub workspaces: u32,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub tasks: u32,
}

/// A refused request: which limit, its value, what is in use and what was asked for (each in
/// the unit of the limit, formatted for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub what: &'static str,
    pub limit: String,
    pub in_use: String,
    pub requested: String,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the tenant's {} quota is {}: {} in use, {} requested",
            self.what, self.limit, self.in_use, self.requested
        )
    }
}

impl Quota {
    /// Whether no field is set.
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }

    /// Checks that `in_use + requested` stays within every set limit; the first one exceeded
    /// is named.
    pub fn check(&self, in_use: QuotaUse, requested: QuotaUse) -> Result<(), QuotaExceeded> {
        let count = |what, limit: Option<u32>, used: u32, asked: u32| match limit {
            Some(l) if asked > 0 && u64::from(used) + u64::from(asked) > u64::from(l) => {
                Err(QuotaExceeded {
                    what,
                    limit: l.to_string(),
                    in_use: used.to_string(),
                    requested: asked.to_string(),
                })
            }
            _ => Ok(()),
        };
        let amount =
            |what, limit: Option<i64>, used: i64, asked: i64, fmt: fn(i64) -> String| match limit {
                Some(l) if asked > 0 && used.saturating_add(asked) > l => Err(QuotaExceeded {
                    what,
                    limit: fmt(l),
                    in_use: fmt(used),
                    requested: fmt(asked),
                }),
                _ => Ok(()),
            };
        count(
            "workspaces",
            self.max_workspaces,
            in_use.workspaces,
            requested.workspaces,
        )?;
        amount(
            "memory",
            self.memory_bytes,
            in_use.memory_bytes,
            requested.memory_bytes,
            format_memory,
        )?;
        amount(
            "cpus",
            self.nano_cpus,
            in_use.nano_cpus,
            requested.nano_cpus,
            format_cpus,
        )?;
        count("tasks", self.max_tasks, in_use.tasks, requested.tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{parse_cpus, parse_memory};

    fn quota() -> Quota {
        Quota {
            max_workspaces: Some(2),
            memory_bytes: Some(parse_memory("8g").unwrap()),
            nano_cpus: Some(parse_cpus("4").unwrap()),
            max_tasks: Some(3),
        }
    }

    fn ws(memory: &str, cpus: &str) -> QuotaUse {
        QuotaUse {
            workspaces: 1,
            memory_bytes: parse_memory(memory).unwrap(),
            nano_cpus: parse_cpus(cpus).unwrap(),
            tasks: 0,
        }
    }

    #[test]
    fn within_the_limits_up_to_the_limit_itself() {
        let q = quota();
        assert!(q.check(QuotaUse::default(), ws("4g", "2")).is_ok());
        assert!(q.check(ws("4g", "2"), ws("4g", "2")).is_ok());
        let tasks = |n| QuotaUse {
            tasks: n,
            ..Default::default()
        };
        assert!(q.check(tasks(2), tasks(1)).is_ok());
        assert!(Quota::default()
            .check(ws("999g", "900"), ws("1g", "1"))
            .is_ok());
    }

    #[test]
    fn each_limit_names_its_numbers() {
        let q = quota();
        let e = q.check(ws("1g", "1"), ws("1g", "1")).map(|_| ());
        assert!(e.is_ok());
        let two = QuotaUse {
            workspaces: 2,
            ..ws("1g", "1")
        };
        let e = q.check(two, ws("1g", "1")).unwrap_err();
        assert_eq!(e.what, "workspaces");
        assert_eq!((e.limit.as_str(), e.in_use.as_str()), ("2", "2"));
        assert_eq!(e.requested, "1");
        let e = q.check(ws("6g", "1"), ws("3g", "1")).unwrap_err();
        assert_eq!(e.what, "memory");
        assert_eq!(
            e.to_string(),
            "the tenant's memory quota is 8g: 6g in use, 3g requested"
        );
        let e = q.check(ws("1g", "3.5"), ws("1g", "1")).unwrap_err();
        assert_eq!(e.what, "cpus");
        assert_eq!((e.limit.as_str(), e.in_use.as_str()), ("4", "3.5"));
        let e = q
            .check(
                QuotaUse {
                    tasks: 3,
                    ..Default::default()
                },
                QuotaUse {
                    tasks: 1,
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(
            (e.what, e.limit.as_str(), e.in_use.as_str()),
            ("tasks", "3", "3")
        );
    }

    #[test]
    fn a_tenant_already_over_its_quota_may_still_do_what_asks_for_nothing() {
        // Lowering a quota below the current use must not block starting no new workspace.
        let q = quota();
        let over = QuotaUse {
            workspaces: 9,
            memory_bytes: i64::MAX,
            nano_cpus: i64::MAX,
            tasks: 9,
        };
        assert!(q.check(over, QuotaUse::default()).is_ok());
        assert!(q
            .check(
                over,
                QuotaUse {
                    tasks: 1,
                    ..Default::default()
                }
            )
            .is_err());
    }
}
