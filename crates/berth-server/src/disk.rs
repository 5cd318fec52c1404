//! Free space on the data dir's filesystem: the reconciler watches it (an audit record when it
//! crosses a threshold), and creating or restoring a workspace is refused below the hard
//! threshold (`insufficient_storage`, HTTP 507). One `statvfs` per check: cheap enough for
//! every reconciler pass and every create.

use std::path::Path;

use berth_domain::ErrorCode;
use berth_store::AuditRecord;

use crate::config::DiskThresholds;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Where free space stands against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Below the warning threshold.
    Low,
    /// Below the hard threshold: new workspaces are refused.
    Critical,
}

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

pub fn level(free: u64, t: DiskThresholds) -> Level {
    if free < t.min_free {
        Level::Critical
    } else if free < t.warn_free {
        Level::Low
    } else {
        Level::Ok
    }
}

/// Human form of a byte count, e.g. `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Refuses (507 `insufficient_storage`) when the data dir is below the hard threshold. An
/// unreadable free-space figure does not block: doctor reports it.
pub fn ensure_room(state: &AppState) -> ApiResult<()> {
    let t = state.config.disk;
    match free_bytes(&state.config.data_dir) {
        Ok(free) if level(free, t) == Level::Critical => Err(ApiError::new(
            ErrorCode::InsufficientStorage,
            format!(
                "the server's data dir {} has {} free, below the {} needed for new workspaces \
                 (disk_min_free): free disk space first",
                state.config.data_dir.display(),
                human(free),
                human(t.min_free)
            ),
        )),
        _ => Ok(()),
    }
}

/// One reconciler look: writes an audit record (and a log line) when the level changes from
/// `last`, and returns the new level.
pub async fn observe(state: &AppState, last: Level) -> Level {
    let t = state.config.disk;
    let free = match free_bytes(&state.config.data_dir) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "free space of the data dir unknown");
            return last;
        }
    };
    let now = level(free, t);
    if now == last {
        return now;
    }
    let (action, result, detail) = match now {
        Level::Ok => (
            "system.disk_ok",
            "ok",
            format!("{} free again", human(free)),
        ),
        Level::Low => (
            "system.disk_low",
            "warning",
            format!(
                "{} free, below the warning threshold {} (disk_warn_free); below {} new workspaces are refused",
                human(free),
                human(t.warn_free),
                human(t.min_free)
            ),
        ),
        Level::Critical => (
            "system.disk_critical",
            "insufficient_storage",
            format!(
                "{} free, below {} (disk_min_free): new workspaces and restores are refused",
                human(free),
                human(t.min_free)
            ),
        ),
    };
    if now == Level::Ok {
        tracing::info!(dir = %state.config.data_dir.display(), "{detail}");
    } else {
        tracing::warn!(dir = %state.config.data_dir.display(), "{detail}");
    }
    let rec = AuditRecord {
        actor: crate::reconciler::ACTOR.to_owned(),
        action: action.to_owned(),
        target: state.config.data_dir.display().to_string(),
        result: result.to_owned(),
        detail: Some(detail),
        ..AuditRecord::default()
    };
    if let Err(e) = state.store.append_audit(&rec).await {
        tracing::error!(error = %e, "could not write audit record");
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_thresholds() {
        let t = DiskThresholds {
            warn_free: 5 << 30,
            min_free: 1 << 30,
        };
        assert_eq!(level(10 << 30, t), Level::Ok);
        assert_eq!(level(5 << 30, t), Level::Ok);
        assert_eq!(level((5 << 30) - 1, t), Level::Low);
        assert_eq!(level(1 << 30, t), Level::Low);
        assert_eq!(level((1 << 30) - 1, t), Level::Critical);
        assert_eq!(level(0, t), Level::Critical);
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }

    #[test]
    fn free_bytes_reads_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
