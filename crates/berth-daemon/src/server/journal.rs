//! The session journal: a small file in the workspace's persistent home that lists the daemon's
//! sessions, so that after the workspace restarts (a host reboot, a stop and a start) the new
//! daemon reports the sessions that died with the old one as `ended` instead of forgetting
//! them.
//!
//! The file is the workspace's own (whatever runs inside can rewrite it), so it is read with a
//! size cap, bad entries are skipped, and what it says is only ever shown back, never acted on.

use berth_domain::Timestamp;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::proto::{SessionInfo, SessionState};

/// A journal larger than this is ignored.
const MAX_BYTES: u64 = 1 << 20;

/// One session as remembered across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: String,
    pub name: String,
    pub argv: Vec<String>,
    /// A record whose time is not RFC 3339 is not loaded (like one with an overlong field).
    pub created_at: Timestamp,
    /// Set when the session had exited before the restart.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

impl Record {
    pub(crate) fn of(s: &SessionInfo) -> Self {
        Record {
            id: s.id.clone(),
            name: s.name.clone(),
            argv: s.argv.clone(),
            created_at: s.created_at.clone(),
            exit_code: s.exit_code,
        }
    }

    /// How the new daemon lists it: `ended` (its processes died with the old daemon, no exit
    /// code), or `exited` with the code it had before.
    pub(crate) fn into_info(self) -> SessionInfo {
        SessionInfo {
            id: self.id,
            name: self.name,
            argv: self.argv,
            pid: 0,
            state: if self.exit_code.is_some() {
                SessionState::Exited
            } else {
                SessionState::Ended
            },
            exit_code: self.exit_code,
            created_at: self.created_at,
            attached: 0,
            cols: 0,
            rows: 0,
            scrollback_bytes: 0,
        }
    }
}

/// The sessions an earlier daemon wrote down, at most `max`; empty when there is no journal or
/// it cannot be read.
pub(crate) fn load(path: &Path, max: usize) -> Vec<Record> {
    let read = || -> std::io::Result<Vec<u8>> {
        let f = std::fs::File::open(path)?;
        if f.metadata()?.len() > MAX_BYTES {
            return Err(std::io::Error::other("too large"));
        }
        std::fs::read(path)
    };
    let data = match read() {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the session journal");
            return Vec::new();
        }
    };
    let values: Vec<serde_json::Value> = serde_json::from_slice(&data).unwrap_or_default();
    let mut records: Vec<Record> = values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .filter(|r: &Record| r.id.len() <= 64 && r.name.len() <= 63 && r.argv.len() <= 256)
        .collect();
    let drop_n = records.len().saturating_sub(max);
    records.drain(..drop_n);
    records
}

/// Replaces the journal (a new file renamed over the old one, so a symlink there is replaced,
/// not followed).
pub(crate) fn save(path: &Path, records: &[Record]) {
    if let Err(e) = write(path, records) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the session journal");
    }
}

fn write(path: &Path, records: &[Record]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("the journal path has no directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".sessions.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(records).map_err(std::io::Error::other)?)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_marks_running_sessions_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth").join("sessions.json");
        let running = Record {
            id: "a1".into(),
            name: "main".into(),
            argv: vec!["bash".into()],
            created_at: Timestamp::parse("2026-12-04T00:00:00Z").unwrap(),
            exit_code: None,
        };
        let exited = Record {
            exit_code: Some(3),
            id: "b2".into(),
            name: "build".into(),
            ..running.clone()
        };
        save(&path, &[running.clone(), exited.clone()]);
        let back = load(&path, 10);
        assert_eq!(back, vec![running, exited]);
        let infos: Vec<SessionInfo> = back.into_iter().map(Record::into_info).collect();
        assert_eq!(infos[0].state, SessionState::Ended);
        assert_eq!(infos[1].state, SessionState::Exited);
        assert_eq!(infos[1].exit_code, Some(3));
        assert_eq!(load(&path, 1).len(), 1);
        // A record whose time is not RFC 3339 is skipped; another offset is normalized.
        std::fs::write(
            &path,
            br#"[{"id":"c3","name":"x","argv":[],"created_at":"soon"},
                 {"id":"d4","name":"y","argv":[],"created_at":"2026-12-04T01:00:00+01:00"}]"#,
        )
        .unwrap();
        let back = load(&path, 10);
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].id.as_str(), back[0].created_at.as_str()),
            ("d4", "2026-12-04T00:00:00.000Z")
        );
        // Garbage is ignored, not fatal.
        std::fs::write(&path, b"not json").unwrap();
        assert!(load(&path, 10).is_empty());
        assert!(load(&dir.path().join("missing"), 10).is_empty());
    }
}
