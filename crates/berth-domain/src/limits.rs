//! Resource limits of a workspace: memory, CPU and process count, parsed from what people type.

use serde::{Deserialize, Serialize};

pub const MIB: i64 = 1024 * 1024;
/// Below this the daemon and a shell do not fit comfortably.
pub const MIN_MEMORY: i64 = 32 * MIB;
pub const MAX_MEMORY: i64 = 1024 * 1024 * MIB;
pub const MIN_NANO_CPUS: i64 = 10_000_000; // 0.01 CPU
pub const MAX_NANO_CPUS: i64 = 1024 * 1_000_000_000;
pub const MIN_PIDS: i64 = 16;
pub const MAX_PIDS: i64 = 32_768;

/// Hard caps applied to a workspace container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory (and memory+swap) cap in bytes.
    pub memory_bytes: i64,
    /// CPU quota in billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: i64,
    /// Maximum number of processes/threads.
    pub pids: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 2048 * MIB,
            nano_cpus: 1_000_000_000,
            pids: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("invalid memory {0:?}: use a number with an optional unit k, m or g, e.g. 512m")]
    MemorySyntax(String),
    #[error("memory {0:?} is out of range: it must be between 32m and 1024g")]
    MemoryRange(String),
    #[error("invalid cpus {0:?}: use a decimal number of CPUs, e.g. 1 or 0.5")]
    CpusSyntax(String),
    #[error("cpus {0:?} is out of range: it must be between 0.01 and 1024")]
    CpusRange(String),
    #[error("pids {0} is out of range: it must be between {MIN_PIDS} and {MAX_PIDS}")]
    PidsRange(i64),
}

impl Limits {
    /// Validates all three fields.
    pub fn validate(self) -> Result<Self, LimitsError> {
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&self.memory_bytes) {
            return Err(LimitsError::MemoryRange(self.memory_bytes.to_string()));
        }
        if !(MIN_NANO_CPUS..=MAX_NANO_CPUS).contains(&self.nano_cpus) {
            return Err(LimitsError::CpusRange(format_cpus(self.nano_cpus)));
        }
        if !(MIN_PIDS..=MAX_PIDS).contains(&self.pids) {
            return Err(LimitsError::PidsRange(self.pids));
        }
        Ok(self)
    }

    /// CPUs as a decimal number, e.g. `0.5`.
    pub fn cpus(&self) -> f64 {
        self.nano_cpus as f64 / 1e9
    }
}

/// Parses `512m`, `2g`, `1048576`, `64MiB`, `1.5g` into bytes.
pub fn parse_memory(s: &str) -> Result<i64, LimitsError> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(LimitsError::MemorySyntax(s.to_owned())),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| LimitsError::MemorySyntax(s.to_owned()))?;
    if !value.is_finite() {
        return Err(LimitsError::MemorySyntax(s.to_owned()));
    }
    let bytes = value * mult;
    if !(MIN_MEMORY as f64..=MAX_MEMORY as f64).contains(&bytes) {
        return Err(LimitsError::MemoryRange(s.to_owned()));
    }
    Ok(bytes as i64)
}

/// Parses `1`, `0.5`, `2.25` CPUs into nano-CPUs.
pub fn parse_cpus(s: &str) -> Result<i64, LimitsError> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| LimitsError::CpusSyntax(s.to_owned()))?;
    if !value.is_finite() {
        return Err(LimitsError::CpusSyntax(s.to_owned()));
    }
    let nano = (value * 1e9).round();
    if !(MIN_NANO_CPUS as f64..=MAX_NANO_CPUS as f64).contains(&nano) {
        return Err(LimitsError::CpusRange(s.to_owned()));
    }
    Ok(nano as i64)
}

/// Formats bytes the way people type them: `512m`, `2g`, or exact bytes.
pub fn format_memory(bytes: i64) -> String {
    const GIB: i64 = 1024 * MIB;
    if bytes % GIB == 0 {
        format!("{}g", bytes / GIB)
    } else if bytes % MIB == 0 {
        format!("{}m", bytes / MIB)
    } else {
        bytes.to_string()
    }
}

pub fn format_cpus(nano: i64) -> String {
    let s = format!("{:.2}", nano as f64 / 1e9);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("512m").unwrap(), 512 * MIB);
        assert_eq!(parse_memory("512MiB").unwrap(), 512 * MIB);
        assert_eq!(parse_memory("2g").unwrap(), 2048 * MIB);
        assert_eq!(parse_memory("1.5g").unwrap(), 1536 * MIB);
        assert_eq!(parse_memory("67108864").unwrap(), 64 * MIB);
        assert_eq!(parse_memory("65536k").unwrap(), 64 * MIB);
    }

    #[test]
    fn memory_errors() {
        assert!(matches!(
            parse_memory("lots"),
            Err(LimitsError::MemorySyntax(_))
        ));
        assert!(matches!(
            parse_memory("5x"),
            Err(LimitsError::MemorySyntax(_))
        ));
        assert!(matches!(
            parse_memory(""),
            Err(LimitsError::MemorySyntax(_))
        ));
        assert!(matches!(
            parse_memory("1m"),
            Err(LimitsError::MemoryRange(_))
        ));
        assert!(matches!(
            parse_memory("-5m"),
            Err(LimitsError::MemorySyntax(_))
        ));
        assert!(matches!(
            parse_memory("99999g"),
            Err(LimitsError::MemoryRange(_))
        ));
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1").unwrap(), 1_000_000_000);
        assert_eq!(parse_cpus("0.5").unwrap(), 500_000_000);
        assert!(matches!(parse_cpus("0"), Err(LimitsError::CpusRange(_))));
        assert!(matches!(parse_cpus("-1"), Err(LimitsError::CpusRange(_))));
        assert!(matches!(parse_cpus("NaN"), Err(LimitsError::CpusSyntax(_))));
        assert!(matches!(parse_cpus("one"), Err(LimitsError::CpusSyntax(_))));
    }

    #[test]
    fn validate_ranges() {
        assert!(Limits::default().validate().is_ok());
        let l = Limits {
            pids: 3,
            ..Limits::default()
        };
        assert_eq!(l.validate(), Err(LimitsError::PidsRange(3)));
        let l = Limits {
            memory_bytes: 1,
            ..Limits::default()
        };
        assert!(matches!(l.validate(), Err(LimitsError::MemoryRange(_))));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_memory(512 * MIB), "512m");
        assert_eq!(format_memory(2048 * MIB), "2g");
        assert_eq!(format_memory(1000), "1000");
        assert_eq!(format_cpus(500_000_000), "0.5");
        assert_eq!(format_cpus(1_000_000_000), "1");
    }
}
