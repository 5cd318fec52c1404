//! `devcontainer.json` → workspace template: the subset of a repository's dev container
//! definition that maps onto a berth template (see `docs/templates.md`, "From a
//! devcontainer.json").
//!
//! Honoured: `name` (the description), `onCreateCommand`, `updateContentCommand` and
//! `postCreateCommand` (setup steps, in that order), `containerEnv` and `remoteEnv` (the
//! environment) and `forwardPorts` (recorded as a comment: berth publishes no ports). Every
//! other key — and every value that cannot be carried over — becomes a warning that says why and
//! what to do instead. The file may hold comments and trailing commas, as devcontainer.json
//! allows. The produced TOML always passes [`crate::template::parse`].
//!
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::template::{self, reserved_env, valid_env_name, MAX_ITEMS, MAX_STRING};

/// Largest devcontainer.json accepted, in bytes.
pub const MAX_SOURCE: usize = 256 * 1024;

/// The create-time commands, in the order the dev container spec runs them.
pub const COMMANDS: [&str; 3] = [
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
];

/// Timeout written into each imported step.
const STEP_TIMEOUT: &str = "30m";

/// Why a devcontainer.json cannot be converted at all (not JSON, not an object, too large).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DevcontainerError(pub String);

/// A converted devcontainer.json: the template's TOML text and what was not carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// A JSON value whose objects keep their keys in file order (named commands run in it).
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn kind(&self) -> &'static str {
        match self {
            J::Null => "null",
            J::Bool(_) => "a boolean",
            J::Num(_) => "a number",
            J::Str(_) => "a string",
            J::Arr(_) => "an array",
            J::Obj(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_none<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<J, E> {
        Ok(J::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<J, E> {
        Ok(J::Num(n.to_string()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<J, E> {
        Ok(J::Num(n.to_string()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<J, E> {
        Ok(J::Num(n.to_string()))
    }
    fn visit_str<E>(self, s: &str) -> Result<J, E> {
        Ok(J::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<J, E> {
        Ok(J::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(J::Arr(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, J>()? {
            out.push((k, v));
        }
        Ok(J::Obj(out))
    }
}

/// Blanks `//` and `/* */` comments (outside strings) and trailing commas, keeping every line
/// and column where it was so a JSON error still points at the right place.
pub fn strip_jsonc(source: &str) -> String {
    let mut b = source.as_bytes().to_vec();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            match c {
                b'\\' => i += 1,
                b'"' => in_str = false,
                _ => {}
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                b[i] = b' ';
                i += 1;
            }
            continue;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = b[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(b.len(), |p| i + 2 + p + 2);
            for x in &mut b[i..end] {
                if *x != b'\n' {
                    *x = b' ';
                }
            }
            i = end;
            continue;
        }
        i += 1;
    }
    blank_trailing_commas(&mut b);
    // Only whole ASCII runs and whole comments were replaced by ASCII: still UTF-8.
    String::from_utf8(b).unwrap_or_default()
}

/// A `,` followed (after whitespace) by `]` or `}`, outside strings, becomes a space.
fn blank_trailing_commas(b: &mut [u8]) {
    let mut in_str = false;
    let mut i = 0;
    while i < b.len() {
        match (in_str, b[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') | (false, b'"') => in_str = !in_str,
            (false, b',') => {
                let next = b[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
                if matches!(next, Some(b']') | Some(b'}')) {
                    b[i] = b' ';
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// What is collected from the file before the TOML is written.
#[derive(Default)]
struct Draft {
    description: Option<String>,
    ports: Vec<String>,
    env: BTreeMap<String, String>,
    /// (name, script)
    steps: Vec<(String, String)>,
    warnings: Vec<String>,
}

/// Converts a devcontainer.json into a template's TOML text and the warnings about what was
/// not carried over.
pub fn convert(source: &str) -> Result<Import, DevcontainerError> {
    if source.len() > MAX_SOURCE {
        return Err(DevcontainerError(format!(
            "larger than {MAX_SOURCE} bytes: not a devcontainer.json"
        )));
    }
    let root: J = serde_json::from_str(&strip_jsonc(source))
        .map_err(|e| DevcontainerError(format!("not valid JSON (with comments): {e}")))?;
    let J::Obj(entries) = root else {
        return Err(DevcontainerError(format!(
            "must be a JSON object, not {}",
            root.kind()
        )));
    };
    let mut d = Draft::default();
    let mut commands: BTreeMap<&str, J> = BTreeMap::new();
    for (k, v) in entries {
        match k.as_str() {
            "$schema" => {}
            "name" => match v {
                J::Str(s) if usable(&s) => d.description = Some(s),
                other => d.warn(format!(
                    "key name is not honoured: must be a short string, not {}",
                    other.kind()
                )),
            },
            "containerEnv" | "remoteEnv" => d.env_from(&k, v),
            "forwardPorts" => d.ports_from(v),
            c if COMMANDS.contains(&c) => {
                let c = COMMANDS
                    .iter()
                    .find(|x| **x == c)
                    .copied()
                    .unwrap_or_default();
                commands.insert(c, v);
            }
            other => {
                let why = unhonoured(other);
                d.warn(format!("key {other} is not honoured: {why}"));
            }
        }
    }
    for c in COMMANDS {
        if let Some(v) = commands.remove(c) {
            d.steps_from(c, v);
        }
    }
    let toml = d.render();
    template::parse(&toml).map_err(|e| {
        DevcontainerError(format!(
            "the converted template does not parse ({e}): please report this"
        ))
    })?;
    Ok(Import {
        toml,
        warnings: d.warnings,
    })
}

/// Why a key is not carried over, and what to do instead.
fn unhonoured(key: &str) -> &'static str {
    match key {
        "image" => "the workspace runs berth's base image; set [image] base by hand to an image built on it",
        "build" | "dockerFile" | "dockerfile" | "context" | "dockerComposeFile" | "service"
        | "runServices" => "berth builds no Dockerfiles: list packages in [image] apt/npm/pip, or install what you need in a [[setup]] step",
        "features" => "dev container features are not installed: list their packages in [image] apt/npm/pip, or install the tools in a [[setup]] step",
        "mounts" | "workspaceMount" | "workspaceFolder" => {
            "berth mounts only the workspace's home volume: clone repositories with [[repo]] and set each step's dir"
        }
        "runArgs" | "privileged" | "capAdd" | "securityOpt" | "init" | "overrideCommand"
        | "shutdownAction" => "berth sets the container's options itself (its isolation is not configurable)",
        "hostRequirements" => "set [resources] memory and cpus by hand",
        "remoteUser" | "containerUser" | "updateRemoteUserUID" | "userEnvProbe" => {
            "setup steps run as berth's agent user"
        }
        "postStartCommand" | "postAttachCommand" => {
            "only create-time commands become setup steps (they run once, when the workspace is provisioned)"
        }
        "initializeCommand" => "it runs on the host, which berth never does",
        "waitFor" => "setup steps always finish before agents start",
        "customizations" => "editor settings and extensions do not apply to agents",
        "appPort" | "portsAttributes" | "otherPortsAttributes" => "berth publishes no ports",
        _ => "not a key berth maps (remove it or translate it by hand)",
    }
}

/// A string that may go into the template as it is.
fn usable(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= MAX_STRING && !s.contains('\0') && !s.contains("{{")
}

/// Why a string cannot go into the template as it is.
fn unusable_why(s: &str) -> &'static str {
    if s.contains("{{") {
        "it contains {{, which templates read as a parameter reference"
    } else if s.trim().is_empty() {
        "it is empty"
    } else {
        "it is too long or contains a NUL byte"
    }
}

/// One argument quoted for `sh`.
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&c));
    if plain {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Draft {
    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    fn env_from(&mut self, key: &str, v: J) {
        let J::Obj(vars) = v else {
            return self.warn(format!(
                "key {key} is not honoured: must be an object of NAME: value, not {}",
                v.kind()
            ));
        };
        for (name, value) in vars {
            let at = format!("{key}.{name}");
            let skip = match &value {
                _ if !valid_env_name(&name) => Some("not an environment variable name"),
                _ if reserved_env(&name) => {
                    Some("berth sets it (its proxy, CA bundle, home, user or PATH)")
                }
                J::Str(s) if s.contains("${") => Some(
                    "it uses ${…} dev container variables, which are not substituted: set it in a [[setup]] step or by hand",
                ),
                J::Str(s) if !usable(s) => Some(unusable_why(s)),
                J::Str(_) => None,
                _ => Some("the value must be a string"),
            };
            if let Some(why) = skip {
                self.warn(format!("{at} is not honoured: {why}"));
            } else if self.env.len() >= MAX_ITEMS && !self.env.contains_key(&name) {
                self.warn(format!(
                    "{at} is not honoured: at most {MAX_ITEMS} variables"
                ));
            } else if let J::Str(s) = value {
                self.env.insert(name, s);
            }
        }
    }

    fn ports_from(&mut self, v: J) {
        match v {
            J::Arr(items) => {
                for p in items {
                    match p {
                        J::Num(n) => self.ports.push(n),
                        J::Str(s) if s.bytes().all(|c| c.is_ascii_graphic()) && s.len() <= 256 => {
                            self.ports.push(s)
                        }
                        other => self.warn(format!(
                            "forwardPorts: an entry that is {} is not recorded",
                            other.kind()
                        )),
                    }
                }
            }
            other => self.warn(format!(
                "key forwardPorts is not honoured: must be an array, not {}",
                other.kind()
            )),
        }
    }

    /// A command in any of its three forms: a string (a shell script), an array (argv, quoted
    /// for the shell) or an object of named commands (one step each, in file order).
    fn steps_from(&mut self, key: &str, v: J) {
        match v {
            J::Obj(named) => {
                for (n, cmd) in named {
                    let name: String = format!("{key}: {n}")
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .take(64)
                        .collect();
                    self.step(&format!("{key}.{n}"), name, cmd);
                }
            }
            other => self.step(key, key.to_owned(), other),
        }
    }

    fn step(&mut self, at: &str, name: String, cmd: J) {
        let script = match cmd {
            J::Str(s) => s,
            J::Arr(args) => {
                let mut words = Vec::new();
                for a in args {
                    match a {
                        J::Str(s) => words.push(shell_quote(&s)),
                        other => {
                            return self.warn(format!(
                                "{at} is not honoured: an argument is {}, not a string",
                                other.kind()
                            ))
                        }
                    }
                }
                words.join(" ")
            }
            other => {
                return self.warn(format!(
                    "{at} is not honoured: must be a string, an array or an object, not {}",
                    other.kind()
                ))
            }
        };
        if !usable(&script) {
            return self.warn(format!("{at} is not honoured: {}", unusable_why(&script)));
        }
        if self.steps.iter().any(|(n, _)| *n == name) {
            return self.warn(format!(
                "{at} is not honoured: a step is already named {name:?}"
            ));
        }
        if self.steps.len() >= MAX_ITEMS {
            return self.warn(format!("{at} is not honoured: at most {MAX_ITEMS} steps"));
        }
        if script.contains("${") {
            self.warn(format!(
                "{at}: ${{…}} dev container variables are not substituted (the shell sees them as they are)"
            ));
        }
        self.steps.push((name, script));
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "# Imported from a devcontainer.json by `berth template import`.\n\
             # Setup steps run in order in the home directory, as the agent user: add a [[repo]]\n\
             # to clone the project and set each step's `dir` to run inside it.\n",
        );
        if let Some(d) = &self.description {
            out.push_str(&format!("description = {}\n", toml_str(d)));
        }
        if !self.ports.is_empty() {
            out.push_str(&format!(
                "# forwardPorts (recorded, not applied: berth publishes no ports): {}\n",
                self.ports.join(", ")
            ));
        }
        if !self.env.is_empty() {
            out.push_str("\n[env]\n");
            for (k, v) in &self.env {
                out.push_str(&format!("{k} = {}\n", toml_str(v)));
            }
        }
        for (name, run) in &self.steps {
            out.push_str(&format!(
                "\n[[setup]]\nname = {}\nrun = {}\ntimeout = \"{STEP_TIMEOUT}\"\n",
                toml_str(name),
                toml_str(run)
            ));
        }
        out
    }
}

#[cfg(test)]
#[path = "devcontainer_tests.rs"]
mod tests;
