//! Unit tests of the devcontainer.json converter: JSON with comments, each command form, the
//! environment, warnings, and that every output parses as a template.

use super::*;

fn ok(src: &str) -> (template::Template, Import) {
    let imp = convert(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let t = template::parse(&imp.toml).unwrap_or_else(|e| panic!("{e}\n{}", imp.toml));
    (t, imp)
}

fn steps(t: &template::Template) -> Vec<(&str, &str)> {
    t.setup
        .iter()
        .map(|s| (s.name.as_str(), s.run.as_str()))
        .collect()
}

#[test]
fn comments_and_trailing_commas_are_allowed() {
    let src = r#"// leading comment
    {
      /* block
         comment */ "name": "web // not a comment /* nor this */",
      "postCreateCommand": "echo 'a, ]' ", // trailing
      "containerEnv": { "A": "1", },
    }"#;
    let (t, imp) = ok(src);
    assert_eq!(
        t.description.as_deref(),
        Some("web // not a comment /* nor this */")
    );
    assert_eq!(steps(&t), [("postCreateCommand", "echo 'a, ]' ")]);
    assert_eq!(t.env.get("A").map(String::as_str), Some("1"));
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
}

#[test]
fn strip_keeps_strings_and_positions() {
    let s = "{\"a\": \"x\\\"//y\", // c\n\"b\": [1,2,],}";
    let out = strip_jsonc(s);
    assert_eq!(out.len(), s.len());
    assert_eq!(out, "{\"a\": \"x\\\"//y\",     \n\"b\": [1,2 ] }");
}

#[test]
fn each_command_form_becomes_steps_in_spec_order() {
    let src = r#"{
      "postCreateCommand": { "deps": "npm ci", "tool": ["pip", "install", "it's here"] },
      "updateContentCommand": ["make", "setup"],
      "onCreateCommand": "echo first && echo second"
    }"#;
    let (t, imp) = ok(src);
    assert_eq!(
        steps(&t),
        [
            ("onCreateCommand", "echo first && echo second"),
            ("updateContentCommand", "make setup"),
            ("postCreateCommand: deps", "npm ci"),
            ("postCreateCommand: tool", r"pip install 'it'\''s here'"),
        ]
    );
    assert!(imp.warnings.is_empty(), "{:?}", imp.warnings);
}

#[test]
fn named_commands_keep_file_order() {
    let (t, _) = ok(r#"{"postCreateCommand": {"z": "1", "a": "2", "m": "3"}}"#);
    let names: Vec<&str> = t.setup.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "postCreateCommand: z",
            "postCreateCommand: a",
            "postCreateCommand: m"
        ]
    );
}

#[test]
fn reserved_and_bad_env_is_skipped_with_a_warning() {
    let src = r#"{
      "containerEnv": { "HTTPS_PROXY": "http://x", "PATH": "/x", "OK": "yes", "1BAD": "v" },
      "remoteEnv": { "OK": "remote wins", "LOCAL": "${localEnv:HOME}", "N": 3 }
    }"#;
    let (t, imp) = ok(src);
    assert_eq!(t.env.len(), 1, "{:?}", t.env);
    assert_eq!(t.env.get("OK").map(String::as_str), Some("remote wins"));
    for k in [
        "containerEnv.HTTPS_PROXY",
        "containerEnv.PATH",
        "containerEnv.1BAD",
        "remoteEnv.LOCAL",
        "remoteEnv.N",
    ] {
        assert!(
            imp.warnings
                .iter()
                .any(|w| w.starts_with(&format!("{k} is not honoured"))),
            "{k}: {:?}",
            imp.warnings
        );
    }
}

#[test]
fn unknown_keys_are_warned_and_ports_recorded() {
    let src = r#"{
      "$schema": "https://example/schema.json",
      "image": "mcr.microsoft.com/devcontainers/base",
      "features": { "ghcr.io/devcontainers/features/node:1": {} },
      "mounts": [], "runArgs": ["--privileged"], "customizations": {}, "remoteUser": "vscode",
      "postStartCommand": "x", "somethingNew": 1,
      "forwardPorts": [3000, "db:5432"]
    }"#;
    let (t, imp) = ok(src);
    assert!(t.setup.is_empty() && t.env.is_empty());
    let keys = [
        "image",
        "features",
        "mounts",
        "runArgs",
        "customizations",
        "remoteUser",
        "postStartCommand",
        "somethingNew",
    ];
    assert_eq!(imp.warnings.len(), keys.len(), "{:?}", imp.warnings);
    for (w, k) in imp.warnings.iter().zip(keys) {
        assert!(w.starts_with(&format!("key {k} is not honoured: ")), "{w}");
    }
    assert!(imp.warnings[1].contains("[[setup]]"), "{}", imp.warnings[1]);
    assert!(
        imp.toml.contains(
            "# forwardPorts (recorded, not applied: berth publishes no ports): 3000, db:5432\n"
        ),
        "{}",
        imp.toml
    );
}

#[test]
fn unusable_commands_are_warned_not_written() {
    let src = r#"{
      "onCreateCommand": "docker inspect -f '{{.Id}}' x",
      "updateContentCommand": 5,
      "postCreateCommand": ["echo", 1]
    }"#;
    let (t, imp) = ok(src);
    assert!(t.setup.is_empty());
    assert_eq!(imp.warnings.len(), 3, "{:?}", imp.warnings);
    assert!(
        imp.warnings[0].contains("parameter reference"),
        "{:?}",
        imp.warnings
    );
}

#[test]
fn bad_input_is_one_readable_error() {
    let e = convert("{\"name\": }").unwrap_err().to_string();
    assert!(
        e.starts_with("not valid JSON") && e.contains("line 1"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    assert_eq!(
        convert("[1]").unwrap_err().to_string(),
        "must be a JSON object, not an array"
    );
    assert!(convert(&" ".repeat(MAX_SOURCE + 1)).is_err());
}

#[test]
fn awkward_values_still_parse() {
    let src = r#"{
      "name": "quote \" and \\ and \n newline",
      "postCreateCommand": { "x\ty": "printf '%s\\n' \"$HOME\"\n echo done", "x y": "true" },
      "containerEnv": { "MULTI": "a\nb\"c" }
    }"#;
    let (t, imp) = ok(src);
    // The tab in the name becomes a space, so the second name collides: warned, not written.
    assert_eq!(t.setup.len(), 1, "{:?} {}", imp.warnings, imp.toml);
    assert_eq!(t.setup[0].run, "printf '%s\\n' \"$HOME\"\n echo done");
    assert!(
        imp.warnings[0].contains("already named"),
        "{:?}",
        imp.warnings
    );
    assert_eq!(t.env.get("MULTI").map(String::as_str), Some("a\nb\"c"));
}
