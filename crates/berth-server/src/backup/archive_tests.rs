use std::io::{Cursor, Read};

use super::*;

fn manifest() -> BackupManifest {
    BackupManifest {
        format: 1,
        berth_version: "0.1.0".into(),
        created_at: berth_domain::Timestamp::parse("2026-12-04T00:00:00Z").unwrap(),
        workspace: "acme/web".into(),
        image: "localhost/berth-workspace:x".into(),
        paused: false,
        spec: berth_api::CreateWorkspace {
            name: "web".into(),
            tenant: Some("acme".into()),
            ..Default::default()
        },
    }
}

/// Appends an entry with a raw name (the tar crate refuses `..` through its safe setters).
fn raw<W: Write>(
    b: &mut tar::Builder<W>,
    name: &[u8],
    kind: tar::EntryType,
    data: &[u8],
    link: Option<&[u8]>,
) {
    let mut h = tar::Header::new_old();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o640);
    h.set_uid(0);
    h.set_gid(0);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// An engine tar of a home volume in Podman's naming (`/`, `/x`).
fn engine_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, b"/", tar::EntryType::Directory, b"", None);
    raw(
        &mut b,
        b"/notes.txt",
        tar::EntryType::Regular,
        b"hello",
        None,
    );
    raw(&mut b, b"/src/", tar::EntryType::Directory, b"", None);
    raw(
        &mut b,
        b"/src/main.rs",
        tar::EntryType::Regular,
        b"fn main() {}",
        None,
    );
    raw(
        &mut b,
        b"/link",
        tar::EntryType::Symlink,
        b"",
        Some(b"notes.txt"),
    );
    raw(
        &mut b,
        b"/abs",
        tar::EntryType::Symlink,
        b"",
        Some(b"/etc/shadow"),
    );
    raw(
        &mut b,
        b"/hard",
        tar::EntryType::Link,
        b"",
        Some(b"/notes.txt"),
    );
    raw(&mut b, b"/pipe", tar::EntryType::Fifo, b"", None);
    b.into_inner().unwrap()
}

fn backup_of(engine: &[u8]) -> Vec<u8> {
    let (trailer, out) = write_backup(&manifest(), Cursor::new(engine), Vec::new()).unwrap();
    assert_eq!(trailer.skipped, 1);
    out
}

fn restore_all(archive: &[u8], budget: u64) -> Result<Vec<u8>, ArchiveError> {
    restore(Cursor::new(archive), |_| Some(budget), Vec::new()).map(|(_, out)| out)
}

/// (path, type, mode, uid, link target, content) of each entry of a plain tar.
fn listing(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, u32, u64, String, String)> {
    let mut a = tar::Archive::new(Cursor::new(tar_bytes));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let h = e.header().clone();
            let mut body = String::new();
            e.read_to_string(&mut body).unwrap();
            (
                path,
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                link,
                body,
            )
        })
        .collect()
}

#[test]
fn round_trip_keeps_files_modes_and_links_and_owns_them_by_the_agent() {
    let archive = backup_of(&engine_tar());
    let out = restore_all(&archive, 1 << 20).unwrap();
    let l = listing(&out);
    let names: Vec<&str> = l.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        ["notes.txt", "src", "src/main.rs", "link", "abs", "hard"]
    );
    assert_eq!(l[0].1, tar::EntryType::Regular);
    assert_eq!((l[0].2, l[0].3, l[0].5.as_str()), (0o640, 1000, "hello"));
    assert_eq!(l[3].4, "notes.txt");
    assert_eq!(l[4].4, "/etc/shadow");
    assert_eq!(
        (l[5].1, l[5].4.as_str()),
        (tar::EntryType::Link, "notes.txt")
    );
}

#[test]
fn docker_style_names_are_understood() {
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, b"agent/", tar::EntryType::Directory, b"", None);
    raw(&mut b, b"agent/a", tar::EntryType::Regular, b"x", None);
    let archive = write_backup(
        &manifest(),
        Cursor::new(b.into_inner().unwrap()),
        Vec::new(),
    )
    .unwrap()
    .1;
    let l = listing(&restore_all(&archive, 10).unwrap());
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].0, "a");
}

/// A compressed archive with the manifest, `entries` and (optionally) an end marker.
fn hostile(
    entries: impl FnOnce(&mut tar::Builder<Vec<u8>>),
    trailer: Option<BackupTrailer>,
) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    meta_entry(&mut b, MANIFEST, &serde_json::to_vec(&manifest()).unwrap()).unwrap();
    entries(&mut b);
    if let Some(t) = trailer {
        meta_entry(&mut b, TRAILER, &serde_json::to_vec(&t).unwrap()).unwrap();
    }
    zstd::encode_all(Cursor::new(b.into_inner().unwrap()), 1).unwrap()
}

fn refused(archive: &[u8]) -> String {
    match restore_all(archive, 1 << 20) {
        Err(ArchiveError::Invalid(m)) => m,
        other => panic!("expected a refusal, got {:?}", other.map(|o| o.len())),
    }
}

fn one(entries: u64, bytes: u64) -> Option<BackupTrailer> {
    Some(BackupTrailer {
        entries,
        bytes,
        skipped: 0,
    })
}

/// (entry name, type, link target, expected refusal)
type Case = (
    &'static [u8],
    tar::EntryType,
    Option<&'static [u8]>,
    &'static str,
);

#[test]
fn hostile_entries_are_refused() {
    let cases: Vec<Case> = vec![
        (
            b"home/../etc/passwd",
            tar::EntryType::Regular,
            None,
            "not a plain relative path",
        ),
        (
            b"/etc/passwd",
            tar::EntryType::Regular,
            None,
            "not a plain relative path",
        ),
        (
            b"etc/passwd",
            tar::EntryType::Regular,
            None,
            "outside home/",
        ),
        (b"home/dev", tar::EntryType::Char, None, "device node"),
        (b"home/fifo", tar::EntryType::Fifo, None, "FIFO"),
        (
            b"home/h",
            tar::EntryType::Link,
            Some(b"/etc/shadow"),
            "not a plain relative path",
        ),
        (
            b"home/h",
            tar::EntryType::Link,
            Some(b"home/../../x"),
            "not a plain relative path",
        ),
    ];
    for (name, kind, link, expect) in cases {
        let a = hostile(|b| raw(b, name, kind, b"", link), one(1, 0));
        let m = refused(&a);
        assert!(m.contains(expect), "{}: {m}", String::from_utf8_lossy(name));
    }
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let a = hostile(
        |b| {
            raw(b, b"home/etc", tar::EntryType::Symlink, b"", Some(b"/etc"));
            raw(
                b,
                b"home/etc/passwd",
                tar::EntryType::Regular,
                b"root::0:0::/:/bin/sh",
                None,
            );
        },
        one(2, 20),
    );
    assert!(refused(&a).contains("below or replaces a symlink"));
    // Nor may a later entry replace the symlink itself.
    let a = hostile(
        |b| {
            raw(b, b"home/x", tar::EntryType::Symlink, b"", Some(b"/etc"));
            raw(b, b"home/x", tar::EntryType::Directory, b"", None);
        },
        one(2, 0),
    );
    assert!(refused(&a).contains("below or replaces a symlink"));
}

#[test]
fn truncated_corrupt_and_inconsistent_archives_are_refused() {
    let good = backup_of(&engine_tar());
    assert!(restore_all(&good, 1 << 20).is_ok());
    let m = refused(&good[..good.len() / 2]);
    assert!(m.contains("corrupt or truncated"), "{m}");
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let m = refused(&flipped);
    assert!(m.contains("corrupt"), "{m}");
    assert!(refused(b"not zstd at all").contains("corrupt"));
    // A well-formed archive cut at an entry boundary: no end marker.
    let a = hostile(
        |b| raw(b, b"home/a", tar::EntryType::Regular, b"x", None),
        None,
    );
    assert!(refused(&a).contains("truncated"));
    // An end marker that does not match the content.
    let a = hostile(
        |b| raw(b, b"home/a", tar::EntryType::Regular, b"x", None),
        one(1, 5),
    );
    assert!(refused(&a).contains("inconsistent"));
    // Not a berth backup at all.
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, b"home/a", tar::EntryType::Regular, b"x", None);
    let plain = zstd::encode_all(Cursor::new(b.into_inner().unwrap()), 1).unwrap();
    assert!(refused(&plain).contains("not a berth backup"));
}

#[test]
fn content_beyond_the_budget_is_refused_before_it_is_copied() {
    let a = hostile(
        |b| raw(b, b"home/big", tar::EntryType::Regular, &[7u8; 4096], None),
        one(1, 4096),
    );
    assert!(matches!(
        restore_all(&a, 4095),
        Err(ArchiveError::TooLarge(_))
    ));
    assert!(restore_all(&a, 4096).is_ok());
    // The restore can be stopped after the manifest.
    assert!(matches!(
        restore(Cursor::new(&a), |_| None, Vec::new()),
        Err(ArchiveError::Invalid(_))
    ));
}
