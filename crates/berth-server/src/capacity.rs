//! The host's capacity, against which a workspace's resource caps are checked: a cap above what
//! the host has would not protect anything (and the engine may refuse it only at start).

use berth_domain::limits::{format_cpus, format_memory};
use berth_domain::{ErrorCode, Limits};

use crate::error::{ApiError, ApiResult};

/// What the host has: memory in bytes and CPUs in nano-CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub memory_bytes: i64,
    pub nano_cpus: i64,
}

impl Capacity {
    /// This host's, or `None` when it cannot be read (then nothing is refused on its account).
    pub fn of_host() -> Option<Self> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib: i64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        let cpus = std::thread::available_parallelism().ok()?.get();
        Some(Self {
            memory_bytes: kib.saturating_mul(1024),
            nano_cpus: i64::try_from(cpus).ok()?.saturating_mul(1_000_000_000),
        })
    }

    /// Refuses caps above the capacity with 422 `exceeds_capacity`, naming it.
    pub fn check(self, limits: &Limits) -> ApiResult<()> {
        if limits.memory_bytes > self.memory_bytes {
            return Err(ApiError::new(
                ErrorCode::ExceedsCapacity,
                format!(
                    "memory {} is more than this host has ({})",
                    format_memory(limits.memory_bytes),
                    format_memory(self.memory_bytes)
                ),
            ));
        }
        if limits.nano_cpus > self.nano_cpus {
            return Err(ApiError::new(
                ErrorCode::ExceedsCapacity,
                format!(
                    "cpus {} is more than this host has ({})",
                    format_cpus(limits.nano_cpus),
                    format_cpus(self.nano_cpus)
                ),
            ));
        }
        Ok(())
    }
}

/// Checks `limits` against this host's capacity.
pub fn check_host(limits: &Limits) -> ApiResult<()> {
    match Capacity::of_host() {
        Some(c) => c.check(limits),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: i64 = 1 << 30;

    #[test]
    fn caps_above_the_host_are_refused_naming_its_capacity() {
        let host = Capacity {
            memory_bytes: 23 * GIB,
            nano_cpus: 2_000_000_000,
        };
        let ok = Limits {
            memory_bytes: 2 * GIB,
            nano_cpus: 1_000_000_000,
            pids: 1024,
        };
        host.check(&ok).unwrap();
        let err = host
            .check(&Limits {
                memory_bytes: 1024 * GIB,
                ..ok
            })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ExceedsCapacity);
        assert!(err.message.contains("23g"), "{}", err.message);
        let err = host
            .check(&Limits {
                nano_cpus: 3_000_000_000,
                ..ok
            })
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ExceedsCapacity);
        assert!(err.message.contains("(2)"), "{}", err.message);
    }

    #[test]
    fn this_hosts_capacity_is_read() {
        let c = Capacity::of_host().unwrap();
        assert!(
            c.memory_bytes > 64 << 20 && c.nano_cpus >= 1_000_000_000,
            "{c:?}"
        );
    }
}
