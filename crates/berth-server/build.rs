//! Embeds the web UI: copies `ui/dist` (built by `npm run build` in `ui/`) into OUT_DIR, or a
//! placeholder page saying how to build it, so the server always compiles.

use std::path::{Path, PathBuf};

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dist = manifest.join("../../ui/dist");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("ui");
    println!("cargo:rerun-if-changed={}", dist.display());
    println!(
        "cargo:rerun-if-changed={}",
        dist.join("index.html").display()
    );
    let _ = std::fs::remove_dir_all(&out);
    if dist.join("index.html").is_file() {
        copy_dir(&dist, &out)?;
    } else {
        std::fs::create_dir_all(&out)?;
        std::fs::write(
            out.join("index.html"),
            "<!doctype html><meta charset=utf-8><title>berth</title>\
             <p>The web UI is not built into this binary. Build it with \
             <code>npm --prefix ui ci &amp;&amp; npm --prefix ui run build</code>, then rebuild berth \
             (<code>./scripts/up</code> does both). The API is at <code>/api/v1</code>.</p>",
        )?;
    }
    Ok(())
}
