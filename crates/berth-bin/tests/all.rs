//! Integration tests: the real `berth` binary as server and CLI, the real engine (Podman's
//! Docker-compatible service), real SQLite. One test binary; see `suite/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

pub fn bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_berth"))
}
