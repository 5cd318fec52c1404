//! The backup archive format, read and written synchronously (on a blocking thread).
//!
//! A zstd-compressed tar (frame checksum on): `berth-backup.json` (the manifest) first, then the
//! home volume under `home/`, then `berth-backup-end.json` (entry and byte counts); an archive
//! without the end marker is truncated. Every entry of a restored archive is treated as hostile:
//! only plain relative paths under `home/` (no absolute paths, no `..`), only regular files,
//! directories, symlinks and hard links to earlier entries (no device nodes or FIFOs), nothing
//! below a symlink, owner forced to the agent user, setuid/setgid bits dropped, and content
//! bounded by a byte budget. The output of a restore is a fresh tar the engine extracts
//! confined to the volume; the host never walks the volume's paths.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use berth_api::{BackupManifest, BackupTrailer};

/// Name of the first entry.
pub const MANIFEST: &str = "berth-backup.json";
/// Name of the last entry.
pub const TRAILER: &str = "berth-backup-end.json";
/// Directory of the home volume's entries inside the archive.
const HOME: &str = "home";
/// Largest manifest or trailer accepted.
const MAX_META_BYTES: u64 = 1 << 20;
/// Owner of every restored entry (the agent user).
const AGENT_ID: u64 = crate::lifecycle::WORKSPACE_UID as u64;
/// zstd level: fast, still a good ratio on source trees.
const ZSTD_LEVEL: i32 = 3;
/// Permission bits kept (setuid and setgid are dropped; sticky stays).
const MODE_MASK: u32 = 0o1777;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive is not a berth backup, corrupt, truncated or holds a refused entry.
    #[error("{0}")]
    Invalid(String),
    /// The content exceeds what may be restored.
    #[error("{0}")]
    TooLarge(String),
    /// Reading the engine's tar or writing the output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn invalid(msg: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(msg.into())
}

/// Errors while decoding the uploaded archive are the archive's fault.
fn corrupt(e: io::Error) -> ArchiveError {
    invalid(format!("the archive is corrupt or truncated: {e}"))
}

/// Write errors that stem from reading the archive (see [`Counted`]) are the archive's fault.
fn write_err(e: io::Error) -> ArchiveError {
    if e.kind() == io::ErrorKind::InvalidData {
        invalid(e.to_string())
    } else {
        ArchiveError::Io(e)
    }
}

/// A relative path made only of normal components (`.` is dropped); anything else is refused.
fn plain_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn meta_entry<W: Write>(b: &mut tar::Builder<W>, name: &str, json: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64);
    b.append_data(&mut h, name, json)
}

/// A header for an entry we write: our owner, masked mode, the source's mtime.
fn header(kind: tar::EntryType, mode: u32, mtime: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & MODE_MASK);
    h.set_uid(AGENT_ID);
    h.set_gid(AGENT_ID);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// Strips the engine's name for the archived directory itself: Podman names entries `/x`,
/// Docker `agent/x`.
struct EnginePrefix(Option<PathBuf>);

impl EnginePrefix {
    fn relative(&mut self, raw: &[u8], is_dir: bool) -> Result<PathBuf, ArchiveError> {
        let p = plain_relative(
            Path::new(OsStr::from_bytes(raw))
                .strip_prefix("/")
                .unwrap_or(Path::new(OsStr::from_bytes(raw))),
        )
        .ok_or_else(|| {
            invalid(format!(
                "the engine's archive has a path that is not plain: {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
        let prefix = self.0.get_or_insert_with(|| {
            if is_dir && p.components().count() == 1 {
                p.clone()
            } else {
                PathBuf::new()
            }
        });
        p.strip_prefix(&*prefix)
            .map(Path::to_path_buf)
            .map_err(|_| {
                invalid(format!(
                    "the engine's archive has an entry outside the volume: {}",
                    p.display()
                ))
            })
    }
}

/// Writes a backup archive: `manifest`, every entry of `engine_tar` (the engine's tar of the
/// home volume) under `home/`, the trailer; compressed into `out`.
pub fn write_backup<R: Read, W: Write>(
    manifest: &BackupManifest,
    engine_tar: R,
    out: W,
) -> Result<(BackupTrailer, W), ArchiveError> {
    let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    enc.include_checksum(true)?;
    let mut b = tar::Builder::new(enc);
    let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    meta_entry(&mut b, MANIFEST, &json)?;
    let mut trailer = BackupTrailer::default();
    let mut prefix = EnginePrefix(None);
    let mut source = tar::Archive::new(engine_tar);
    for entry in source.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let rel = prefix.relative(&entry.path_bytes(), kind.is_dir())?;
        let name = Path::new(HOME).join(&rel);
        let mode = entry.header().mode().unwrap_or(0o644);
        let mtime = entry.header().mtime().unwrap_or(0);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let mut h = header(tar::EntryType::Regular, mode, mtime, size);
                b.append_data(&mut h, &name, &mut entry)?;
                trailer.bytes += size;
            }
            tar::EntryType::Directory => {
                let mut h = header(kind, mode, mtime, 0);
                b.append_data(&mut h, &name, io::empty())?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                let Some(target) = target.filter(|t| !t.is_empty()) else {
                    trailer.skipped += 1;
                    continue;
                };
                let target = if kind == tar::EntryType::Link {
                    // Hard links name another entry: rename it like the entries.
                    Path::new(HOME)
                        .join(prefix.relative(&target, false)?)
                        .into_os_string()
                        .into_vec()
                } else {
                    target
                };
                let mut h = header(kind, mode, mtime, 0);
                b.append_link(&mut h, &name, Path::new(OsStr::from_bytes(&target)))?;
            }
            // Sockets, FIFOs and device nodes: nothing to copy.
            _ => {
                trailer.skipped += 1;
                continue;
            }
        }
        trailer.entries += 1;
    }
    let json = serde_json::to_vec_pretty(&trailer).map_err(io::Error::other)?;
    meta_entry(&mut b, TRAILER, &json)?;
    let out = b.into_inner()?.finish()?;
    Ok((trailer, out))
}

/// Reads a whole small JSON entry.
fn read_meta<T: serde::de::DeserializeOwned>(
    entry: &mut tar::Entry<'_, impl Read>,
    what: &str,
) -> Result<T, ArchiveError> {
    if entry.size() > MAX_META_BYTES {
        return Err(invalid(format!("the archive's {what} is too large")));
    }
    let mut buf = Vec::new();
    entry
        .take(MAX_META_BYTES)
        .read_to_end(&mut buf)
        .map_err(corrupt)?;
    serde_json::from_slice(&buf)
        .map_err(|e| invalid(format!("the archive's {what} is invalid: {e}")))
}

/// Restores an archive read from `input` (compressed): hands the manifest to `on_manifest`,
/// which answers with the byte budget (or `None` to stop), then writes the validated home
/// entries as a plain tar (paths relative to the volume root) into `out`.
pub fn restore<R: Read, W: Write>(
    input: R,
    on_manifest: impl FnOnce(BackupManifest) -> Option<u64>,
    out: W,
) -> Result<(BackupTrailer, W), ArchiveError> {
    let decoder = zstd::stream::read::Decoder::new(input).map_err(corrupt)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(corrupt)?;
    let mut first = match entries.next() {
        Some(e) => e.map_err(corrupt)?,
        None => return Err(invalid("the archive is empty")),
    };
    if first.path_bytes().as_ref() != MANIFEST.as_bytes() {
        return Err(invalid(format!(
            "not a berth backup: the first entry is not {MANIFEST}"
        )));
    }
    let manifest: BackupManifest = read_meta(&mut first, "manifest")?;
    if manifest.format != 1 {
        return Err(invalid(format!(
            "backup format {} is not supported (this server reads format 1)",
            manifest.format
        )));
    }
    let budget = on_manifest(manifest).ok_or_else(|| invalid("restore stopped"))?;
    let mut v = Validator::new(budget);
    let mut b = tar::Builder::new(out);
    let mut declared = None;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        if declared.is_some() {
            return Err(invalid(format!("entries follow {TRAILER}")));
        }
        if entry.path_bytes().as_ref() == TRAILER.as_bytes() {
            declared = Some(read_meta::<BackupTrailer>(&mut entry, "end marker")?);
            continue;
        }
        v.copy(&mut entry, &mut b)?;
    }
    let declared = declared.ok_or_else(|| {
        invalid(format!(
            "the archive is truncated: it ends without {TRAILER}"
        ))
    })?;
    if declared.entries != v.seen.entries || declared.bytes != v.seen.bytes {
        return Err(invalid(format!(
            "the archive is inconsistent: its end marker declares {} entries and {} bytes, it holds {} and {}",
            declared.entries, declared.bytes, v.seen.entries, v.seen.bytes
        )));
    }
    let out = b.into_inner()?;
    Ok((v.seen, out))
}

/// The checks on each restored entry, and what was written.
struct Validator {
    budget: u64,
    symlinks: HashSet<PathBuf>,
    seen: BackupTrailer,
}

impl Validator {
    fn new(budget: u64) -> Self {
        Self {
            budget,
            symlinks: HashSet::new(),
            seen: BackupTrailer::default(),
        }
    }

    /// A path under `home/`, relative to the volume root; refused when it leaves the volume
    /// or passes through (or replaces) a symlink restored earlier.
    fn home_path(&self, raw: &[u8]) -> Result<PathBuf, ArchiveError> {
        let shown = String::from_utf8_lossy(raw);
        let p = plain_relative(Path::new(OsStr::from_bytes(raw)))
            .ok_or_else(|| invalid(format!("entry {shown:?}: not a plain relative path")))?;
        let rel = p
            .strip_prefix(HOME)
            .map_err(|_| invalid(format!("entry {shown:?} is outside {HOME}/")))?
            .to_path_buf();
        if rel.ancestors().any(|a| self.symlinks.contains(a)) {
            return Err(invalid(format!(
                "entry {shown:?} lies below or replaces a symlink"
            )));
        }
        Ok(rel)
    }

    fn copy<R: Read, W: Write>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        b: &mut tar::Builder<W>,
    ) -> Result<(), ArchiveError> {
        let rel = self.home_path(&entry.path_bytes())?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        let mtime = entry.header().mtime().unwrap_or(0);
        let shown = rel.display().to_string();
        self.seen.entries += 1;
        if rel.as_os_str().is_empty() {
            // The volume root itself: the engine keeps its own owner and mode.
            return if kind.is_dir() {
                Ok(())
            } else {
                Err(invalid(format!("entry {HOME}/ is not a directory")))
            };
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let left = self.budget.saturating_sub(self.seen.bytes);
                if size > left {
                    return Err(ArchiveError::TooLarge(format!(
                        "the archive's files exceed the restore limit of {} (at {shown})",
                        crate::disk::human(self.budget)
                    )));
                }
                let mut h = header(tar::EntryType::Regular, mode, mtime, size);
                let mut counted = Counted {
                    inner: entry.take(size),
                    n: 0,
                };
                b.append_data(&mut h, &rel, &mut counted)
                    .map_err(write_err)?;
                if counted.n != size {
                    return Err(invalid(format!("the archive is truncated inside {shown}")));
                }
                self.seen.bytes += size;
            }
            tar::EntryType::Directory => {
                let mut h = header(kind, mode, mtime, 0);
                b.append_data(&mut h, &rel, io::empty())?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| invalid(format!("symlink {shown} has no target")))?;
                let mut h = header(kind, 0o777, mtime, 0);
                b.append_link(&mut h, &rel, Path::new(OsStr::from_bytes(&target)))?;
                self.symlinks.insert(rel);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid(format!("hard link {shown} has no target")))?;
                let target = self.home_path(&target)?;
                if target.as_os_str().is_empty() {
                    return Err(invalid(format!("hard link {shown} names the volume root")));
                }
                let mut h = header(kind, mode, mtime, 0);
                b.append_link(&mut h, &rel, &target)?;
            }
            other => {
                return Err(invalid(format!(
                "entry {shown} is a {} ({other:?}): only files, directories and links are restored",
                kind_name(other)
            )))
            }
        }
        Ok(())
    }
}

fn kind_name(k: tar::EntryType) -> &'static str {
    match k {
        tar::EntryType::Char | tar::EntryType::Block => "device node",
        tar::EntryType::Fifo => "FIFO",
        _ => "special entry",
    }
}

/// Counts what a reader gave, and turns its errors into "corrupt archive" errors.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the archive is corrupt or truncated: {e}"),
            )
        })?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
