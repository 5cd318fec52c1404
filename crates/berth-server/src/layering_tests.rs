//! The server's layers point down only: no module outside the HTTP layer (`routes/`, and
//! `openapi.rs` and `lib.rs`, which describe and mount it) imports `routes`. Read from the
//! source files themselves, so a new module is checked without being listed here.

use std::path::{Path, PathBuf};

/// Modules that belong to the HTTP layer, or wire it (relative to `src/`).
const HTTP_LAYER: [&str; 3] = ["routes", "openapi.rs", "lib.rs"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Lines of `text` (test modules included: a test of a service has no business in routes
/// either, except route tests, which live under `routes/` or in `*_tests.rs` of the HTTP layer)
/// that reach into the HTTP layer.
fn route_imports(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .filter(|l| {
            ["crate::routes", "super::routes", "super::super::routes"]
                .iter()
                .any(|needle| l.contains(needle))
        })
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn no_service_module_imports_routes() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 30, "found only {} source files", files.len());
    let mut offenders = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        // Route tests that build a router over a state (or take the route harness) are
        // HTTP-layer code wherever they sit.
        let text = std::fs::read_to_string(&f).unwrap();
        let is_route_test = rel.to_string_lossy().ends_with("_tests.rs")
            && (text.contains("crate::routes::router(")
                || text.contains("crate::routes::test_harness::"));
        if HTTP_LAYER.contains(&top.as_ref()) || is_route_test {
            continue;
        }
        for line in route_imports(&std::fs::read_to_string(&f).unwrap()) {
            offenders.push(format!("{}: {line}", rel.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "service modules import the HTTP layer:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_check_sees_an_import() {
    assert_eq!(
        route_imports("use crate::routes::secrets::reveal;\n// crate::routes in a comment\n"),
        ["use crate::routes::secrets::reveal;"]
    );
    assert!(route_imports("use crate::lifecycle;").is_empty());
}
