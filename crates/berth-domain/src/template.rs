//! Workspace templates: the declarative TOML file a workspace is provisioned from.
//!
//! A template declares parameters, resources, an image, repositories to clone (with a vault
//! secret as credential, delivered as a placeholder), secrets to bind, egress, environment,
//! setup steps, MCP servers and the default agent (see `docs/templates.md`). [`parse`] reads
//! and checks a file completely — unknown keys are errors, so a typo never passes silently —
//! and every error names the key path (`setup[2].timeout`) and what is wrong.
//! [`Template::instantiate`] substitutes `{{param}}` references with the values a create gives.
//!
//! Pure: no I/O. Checks that need the server's knowledge (egress rule syntax, that secrets and
//! egress templates exist) are the server's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::mcp::McpServer;
use crate::task::Agent;

/// Largest template file accepted, in bytes.
pub const MAX_SOURCE: usize = 256 * 1024;
/// Most entries of one list (parameters, repositories, secrets, steps, packages, env vars).
pub const MAX_ITEMS: usize = 64;
/// Longest string value (a setup script, a URL...).
pub const MAX_STRING: usize = 16 * 1024;
/// Default timeout of a setup step, in seconds.
pub const DEFAULT_STEP_TIMEOUT: u64 = 600;
/// Longest timeout a setup step may ask for, in seconds (6 hours).
pub const MAX_STEP_TIMEOUT: u64 = 6 * 3600;

/// What is wrong with a template: where (a key path such as `setup[2].timeout`, or `(file)`
/// for the file as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TemplateError {
    pub path: String,
    pub reason: String,
}

impl TemplateError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Why parameters given to a template do not fit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter {name} is required ({description}): give it with --param {name}=VALUE")]
    Missing { name: String, description: String },
    #[error("the template has no parameter {name} (it has: {known})")]
    Unknown { name: String, known: String },
    /// The template became invalid once the values were put in (e.g. a `{{repo}}` that is not
    /// a URL).
    #[error("with these parameters, {0}")]
    Invalid(TemplateError),
}

/// One template parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Resource caps; absent: the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

/// The image: a base (default: berth's) and extras installed into a derived image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apt: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub npm: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<String>,
}

impl ImageSpec {
    /// Whether a derived image is needed.
    pub fn has_extras(&self) -> bool {
        !(self.apt.is_empty() && self.npm.is_empty() && self.pip.is_empty())
    }
}

/// A repository cloned into the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Relative to the home directory.
    pub dir: String,
    /// A secret (bound in `[[secret]]`) whose placeholder is the git password; berth's egress
    /// proxy swaps the real value in for the secret's hosts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A tenant secret bound to the workspace as a placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretBinding {
    pub name: String,
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

/// Egress templates to attach and rules of the workspace's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

/// The git identity written into the workspace's global git config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A setup step: a shell script run as the agent user after the clones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub run: String,
    /// Seconds.
    pub timeout: u64,
    /// Working directory relative to the home directory (default: the home directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// A parsed, checked template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub params: Vec<Param>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub image: ImageSpec,
    #[serde(default)]
    pub git: GitIdentity,
    #[serde(default)]
    pub repos: Vec<Repo>,
    #[serde(default)]
    pub secrets: Vec<SecretBinding>,
    #[serde(default)]
    pub egress: EgressSpec,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub setup: Vec<Step>,
    #[serde(default)]
    pub mcp: Vec<McpServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    #[serde(default)]
    pub auto_session: bool,
    /// The default approval policy of the workspace's tasks (`approval` in the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::ApprovalPolicy>,
}

/// Environment variables a template may not set: berth's own plumbing (the egress proxy, the
/// CA bundle: [`crate::workspace::egress_env_names`]) and these.
pub const RESERVED_ENV: &[&str] = &["HOME", "USER", "PATH"];

/// Whether a template may not set `k` (see [`RESERVED_ENV`]).
pub fn reserved_env(k: &str) -> bool {
    RESERVED_ENV.contains(&k) || crate::workspace::egress_env_names().any(|e| e == k)
}

type Table = toml::Table;

/// Parses and checks a template file.
pub fn parse(source: &str) -> Result<Template, TemplateError> {
    if source.len() > MAX_SOURCE {
        return Err(TemplateError::new(
            "(file)",
            format!("larger than {MAX_SOURCE} bytes"),
        ));
    }
    let table: Table = toml::from_str(source).map_err(|e| {
        // toml's message names the line and column; keep it on one line.
        let msg = e.to_string().replace('\n', " ");
        TemplateError::new("(file)", format!("not valid TOML: {}", msg.trim()))
    })?;
    let t = from_table(&table)?;
    t.check()?;
    Ok(t)
}

fn from_table(table: &Table) -> Result<Template, TemplateError> {
    let r = Reader {
        path: String::new(),
    };
    r.only(
        table,
        &[
            "description",
            "param",
            "resources",
            "image",
            "git",
            "repo",
            "secret",
            "egress",
            "env",
            "setup",
            "mcp",
            "agent",
            "auto_session",
            "approval",
        ],
    )?;
    let mut t = Template {
        description: r.opt_string(table, "description")?,
        ..Template::default()
    };
    for (i, p) in r.tables(table, "param")? {
        let r = r.item("param", i);
        r.only(p, &["name", "description", "required", "default"])?;
        t.params.push(Param {
            name: r.string(p, "name")?,
            description: r.opt_string(p, "description")?,
            required: r.opt_bool(p, "required")?.unwrap_or(false),
            default: r.opt_string(p, "default")?,
        });
    }
    if let Some(res) = r.opt_table(table, "resources")? {
        let r = r.key("resources");
        r.only(res, &["memory", "cpus", "pids"])?;
        t.resources = Resources {
            memory: r.opt_string(res, "memory")?,
            cpus: match res.get("cpus") {
                // `cpus = 2` and `cpus = "0.5"` both read naturally.
                Some(toml::Value::Integer(n)) => Some(n.to_string()),
                Some(toml::Value::Float(f)) => Some(f.to_string()),
                _ => r.opt_string(res, "cpus")?,
            },
            pids: r.opt_int(res, "pids")?,
        };
    }
    if let Some(img) = r.opt_table(table, "image")? {
        let r = r.key("image");
        r.only(img, &["base", "apt", "npm", "pip"])?;
        t.image = ImageSpec {
            base: r.opt_string(img, "base")?,
            apt: r.strings(img, "apt")?,
            npm: r.strings(img, "npm")?,
            pip: r.strings(img, "pip")?,
        };
    }
    if let Some(g) = r.opt_table(table, "git")? {
        let r = r.key("git");
        r.only(g, &["name", "email"])?;
        t.git = GitIdentity {
            name: r.opt_string(g, "name")?,
            email: r.opt_string(g, "email")?,
        };
    }
    for (i, p) in r.tables(table, "repo")? {
        let r = r.item("repo", i);
        r.only(p, &["url", "branch", "dir", "credential"])?;
        let url = r.string(p, "url")?;
        let dir = match r.opt_string(p, "dir")? {
            Some(d) => d,
            None => default_dir(&url).ok_or_else(|| {
                r.err(
                    "dir",
                    "cannot be derived from the URL: give the directory to clone into",
                )
            })?,
        };
        t.repos.push(Repo {
            url,
            branch: r.opt_string(p, "branch")?,
            dir,
            credential: r.opt_string(p, "credential")?,
        });
    }
    for (i, s) in r.tables(table, "secret")? {
        let r = r.item("secret", i);
        r.only(s, &["name", "hosts", "headers"])?;
        t.secrets.push(SecretBinding {
            name: r.string(s, "name")?,
            hosts: r.strings(s, "hosts")?,
            headers: r.strings(s, "headers")?,
        });
    }
    if let Some(e) = r.opt_table(table, "egress")? {
        let r = r.key("egress");
        r.only(e, &["templates", "rules"])?;
        t.egress = EgressSpec {
            templates: r.strings(e, "templates")?,
            rules: r.strings(e, "rules")?,
        };
    }
    if let Some(env) = r.opt_table(table, "env")? {
        let r = r.key("env");
        for (k, v) in env {
            match v {
                toml::Value::String(s) => {
                    t.env.insert(k.clone(), s.clone());
                }
                other => {
                    return Err(r.err(k, &format!("must be a string, not {}", other.type_str())))
                }
            }
        }
    }
    for (i, s) in r.tables(table, "setup")? {
        let r = r.item("setup", i);
        r.only(s, &["name", "run", "timeout", "dir"])?;
        t.setup.push(Step {
            name: r.string(s, "name")?,
            run: r.string(s, "run")?,
            timeout: r.timeout(s, "timeout")?,
            dir: r.opt_string(s, "dir")?,
        });
    }
    for (i, m) in r.tables(table, "mcp")? {
        let r = r.item("mcp", i);
        r.only(
            m,
            &["name", "type", "command", "args", "env", "url", "headers"],
        )?;
        let server: McpServer =
            toml::Value::Table(m.clone())
                .try_into()
                .map_err(|e: toml::de::Error| {
                    TemplateError::new(r.path.clone(), e.message().replace('\n', " "))
                })?;
        t.mcp.push(server);
    }
    if let Some(a) = r.opt_string(table, "agent")? {
        t.agent = Some(Agent::parse(&a).ok_or_else(|| {
            r.err(
                "agent",
                &format!("unknown agent {a:?}: use claude, codex, gemini or opencode"),
            )
        })?);
    }
    t.auto_session = r.opt_bool(table, "auto_session")?.unwrap_or(false);
    if let Some(a) = r.opt_string(table, "approval")? {
        t.approval = Some(crate::ApprovalPolicy::parse(&a).ok_or_else(|| {
            r.err(
                "approval",
                &format!("unknown approval policy {a:?}: use never, on-request or always"),
            )
        })?);
    }
    Ok(t)
}

/// The directory a URL clones into by default (`…/app.git` → `app`).
fn default_dir(url: &str) -> Option<String> {
    let last = url.trim_end_matches('/').rsplit('/').next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty() && !name.contains("{{") && check_rel_path(name).is_ok())
        .then(|| name.to_owned())
}

/// Reads typed values out of TOML tables, naming the key path in every error.
struct Reader {
    path: String,
}

impl Reader {
    fn key(&self, k: &str) -> Reader {
        Reader { path: self.join(k) }
    }

    fn item(&self, k: &str, i: usize) -> Reader {
        Reader {
            path: format!("{}[{i}]", self.join(k)),
        }
    }

    fn join(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_owned()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn err(&self, k: &str, reason: &str) -> TemplateError {
        TemplateError::new(self.join(k), reason)
    }

    /// Unknown keys are errors: a misspelt key would otherwise be ignored.
    fn only(&self, t: &Table, known: &[&str]) -> Result<(), TemplateError> {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                let hint = known
                    .iter()
                    .find(|c| close(c, k))
                    .map(|c| format!(" (did you mean {c:?}?)"))
                    .unwrap_or_default();
                return Err(self.err(k, &format!("unknown key{hint}")));
            }
        }
        Ok(())
    }

    fn opt_string(&self, t: &Table, k: &str) -> Result<Option<String>, TemplateError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => {
                if s.len() > MAX_STRING {
                    return Err(self.err(k, &format!("longer than {MAX_STRING} bytes")));
                }
                if s.contains('\0') {
                    return Err(self.err(k, "contains a NUL byte"));
                }
                Ok(Some(s.clone()))
            }
            Some(v) => Err(self.err(k, &format!("must be a string, not {}", v.type_str()))),
        }
    }

    fn string(&self, t: &Table, k: &str) -> Result<String, TemplateError> {
        match self.opt_string(t, k)? {
            Some(s) if s.trim().is_empty() => Err(self.err(k, "must not be empty")),
            Some(s) => Ok(s),
            None => Err(self.err(k, "is missing")),
        }
    }

    fn opt_bool(&self, t: &Table, k: &str) -> Result<Option<bool>, TemplateError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(k, &format!("must be true or false, not {}", v.type_str()))),
        }
    }

    fn opt_int(&self, t: &Table, k: &str) -> Result<Option<i64>, TemplateError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => Ok(Some(*n)),
            Some(v) => Err(self.err(k, &format!("must be an integer, not {}", v.type_str()))),
        }
    }

    fn opt_table<'a>(&self, t: &'a Table, k: &str) -> Result<Option<&'a Table>, TemplateError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t)),
            Some(v) => Err(self.err(k, &format!("must be a table, not {}", v.type_str()))),
        }
    }

    /// An array of tables (`[[k]]`), with each item's index.
    fn tables<'a>(&self, t: &'a Table, k: &str) -> Result<Vec<(usize, &'a Table)>, TemplateError> {
        let Some(v) = t.get(k) else {
            return Ok(Vec::new());
        };
        let toml::Value::Array(items) = v else {
            return Err(self.err(
                k,
                &format!("must be an array of tables ([[{k}]]), not {}", v.type_str()),
            ));
        };
        if items.len() > MAX_ITEMS {
            return Err(self.err(k, &format!("at most {MAX_ITEMS} entries")));
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                toml::Value::Table(t) => out.push((i, t)),
                other => {
                    return Err(TemplateError::new(
                        format!("{}[{i}]", self.join(k)),
                        format!("must be a table, not {}", other.type_str()),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn strings(&self, t: &Table, k: &str) -> Result<Vec<String>, TemplateError> {
        let Some(v) = t.get(k) else {
            return Ok(Vec::new());
        };
        let toml::Value::Array(items) = v else {
            return Err(self.err(
                k,
                &format!("must be an array of strings, not {}", v.type_str()),
            ));
        };
        if items.len() > MAX_ITEMS {
            return Err(self.err(k, &format!("at most {MAX_ITEMS} entries")));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                toml::Value::String(s) if s.len() <= MAX_STRING && !s.contains('\0') => {
                    Ok(s.clone())
                }
                toml::Value::String(_) => Err(TemplateError::new(
                    format!("{}[{i}]", self.join(k)),
                    format!("longer than {MAX_STRING} bytes or contains a NUL byte"),
                )),
                other => Err(TemplateError::new(
                    format!("{}[{i}]", self.join(k)),
                    format!("must be a string, not {}", other.type_str()),
                )),
            })
            .collect()
    }

    /// A step timeout: seconds as an integer, or a duration such as `"90s"`, `"10m"`, `"1h"`.
    fn timeout(&self, t: &Table, k: &str) -> Result<u64, TemplateError> {
        let secs = match t.get(k) {
            None => return Ok(DEFAULT_STEP_TIMEOUT),
            Some(toml::Value::Integer(n)) => u64::try_from(*n).ok(),
            Some(toml::Value::String(s)) => parse_duration(s),
            Some(v) => {
                return Err(self.err(
                    k,
                    &format!(
                        "must be seconds or a duration like \"10m\", not {}",
                        v.type_str()
                    ),
                ))
            }
        };
        match secs {
            Some(s) if (1..=MAX_STEP_TIMEOUT).contains(&s) => Ok(s),
            _ => Err(self.err(
                k,
                &format!(
                    "must be between 1 second and {} hours (seconds, or a duration like \"90s\", \"10m\", \"1h\")",
                    MAX_STEP_TIMEOUT / 3600
                ),
            )),
        }
    }
}

/// `90s`, `10m`, `1h`, `300`.
fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Whether two keys are one typo apart (a swap, a missing, extra or different letter).
fn close(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ra, rb) = (a.len() - prefix - suffix, b.len() - prefix - suffix);
    (ra <= 1 && rb <= 1)
        || (ra == 2 && rb == 2 && a[prefix] == b[prefix + 1] && a[prefix + 1] == b[prefix])
}

fn valid_param_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// A secret's name as the vault takes it (`GITHUB_TOKEN`).
pub fn valid_secret_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

pub(crate) fn valid_env_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// A package name for apt, npm or pip: no shell or option syntax (never starting with `-`, an
/// option; no quote, space, newline or `..`). The runtime checks it again before a name goes
/// into an image build's `RUN` line.
pub fn valid_package(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 214
        && !p.starts_with('-')
        && !p.contains("..")
        && p.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'@' | b'/'
                        | b'.'
                        | b'_'
                        | b'+'
                        | b':'
                        | b'='
                        | b'~'
                        | b'-'
                        | b'^'
                        | b'<'
                        | b'>'
                )
        })
}

/// A path relative to the home directory that stays inside it.
fn check_rel_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.starts_with('/') {
        return Err("must be relative to the home directory".into());
    }
    if p.split('/').any(|c| c == ".." || c == ".") {
        return Err("must not contain . or .. components".into());
    }
    if p.bytes().any(|c| c.is_ascii_control()) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A git branch name: what `git check-ref-format --branch` accepts, minus oddities.
fn valid_branch(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 200
        && !b.starts_with('-')
        && !b.starts_with('/')
        && !b.ends_with('/')
        && !b.ends_with(".lock")
        && !b.contains("..")
        && !b.contains("@{")
        && !b.contains("//")
        && b.bytes().all(|c| {
            c.is_ascii_graphic() && !matches!(c, b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
        })
}

/// The `{{name}}` references in `s`, or what is malformed about them.
fn references(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "a {{ without its closing }}".to_owned())?;
        let name = after[..end].trim();
        if !valid_param_name(name) {
            return Err(format!(
                "{{{{{}}}}} is not a parameter reference (use {{{{name}}}} with a-z, 0-9, _)",
                &after[..end]
            ));
        }
        out.push(name);
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Replaces each `{{name}}` in `s` with its value.
fn substitute(s: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                out.push_str(values.get(name).map(String::as_str).unwrap_or_default());
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

impl Template {
    /// Every string that may hold `{{param}}` references, with its key path.
    fn strings_mut(&mut self) -> Vec<(String, &mut String)> {
        let mut out: Vec<(String, &mut String)> = Vec::new();
        if let Some(b) = &mut self.image.base {
            out.push(("image.base".into(), b));
        }
        if let Some(n) = &mut self.git.name {
            out.push(("git.name".into(), n));
        }
        if let Some(e) = &mut self.git.email {
            out.push(("git.email".into(), e));
        }
        for (i, r) in self.repos.iter_mut().enumerate() {
            out.push((format!("repo[{i}].url"), &mut r.url));
            out.push((format!("repo[{i}].dir"), &mut r.dir));
            if let Some(b) = &mut r.branch {
                out.push((format!("repo[{i}].branch"), b));
            }
        }
        for (i, s) in self.secrets.iter_mut().enumerate() {
            for (j, h) in s.hosts.iter_mut().enumerate() {
                out.push((format!("secret[{i}].hosts[{j}]"), h));
            }
        }
        for (i, r) in self.egress.rules.iter_mut().enumerate() {
            out.push((format!("egress.rules[{i}]"), r));
        }
        for (k, v) in self.env.iter_mut() {
            out.push((format!("env.{k}"), v));
        }
        for (i, s) in self.setup.iter_mut().enumerate() {
            out.push((format!("setup[{i}].run"), &mut s.run));
            if let Some(d) = &mut s.dir {
                out.push((format!("setup[{i}].dir"), d));
            }
        }
        for (i, m) in self.mcp.iter_mut().enumerate() {
            match &mut m.transport {
                crate::mcp::McpTransport::Stdio { command, args, env } => {
                    out.push((format!("mcp[{i}].command"), command));
                    for (j, a) in args.iter_mut().enumerate() {
                        out.push((format!("mcp[{i}].args[{j}]"), a));
                    }
                    for (k, v) in env.iter_mut() {
                        out.push((format!("mcp[{i}].env.{k}"), v));
                    }
                }
                crate::mcp::McpTransport::Http { url, headers } => {
                    out.push((format!("mcp[{i}].url"), url));
                    for (k, v) in headers.iter_mut() {
                        out.push((format!("mcp[{i}].headers.{k}"), v));
                    }
                }
            }
        }
        out
    }

    /// Checks everything that does not depend on parameter values, then (with the references
    /// still in place) the shapes that do not involve a reference.
    fn check(&self) -> Result<(), TemplateError> {
        let mut names = BTreeSet::new();
        for (i, p) in self.params.iter().enumerate() {
            let at = |k: &str| format!("param[{i}].{k}");
            if !valid_param_name(&p.name) {
                return Err(TemplateError::new(
                    at("name"),
                    format!(
                        "{:?} is not a parameter name (a-z, 0-9, _, starting with a letter or _)",
                        p.name
                    ),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(TemplateError::new(
                    at("name"),
                    format!("parameter {} is declared twice", p.name),
                ));
            }
            if p.required && p.default.is_some() {
                return Err(TemplateError::new(
                    at("default"),
                    "a required parameter takes no default (drop one of them)",
                ));
            }
            if let Some(d) = &p.default {
                if !references(d).map(|r| r.is_empty()).unwrap_or(false) {
                    return Err(TemplateError::new(
                        at("default"),
                        "a default cannot reference parameters",
                    ));
                }
            }
        }
        // References: only declared parameters.
        let mut copy = self.clone();
        for (path, s) in copy.strings_mut() {
            let refs = references(s).map_err(|r| TemplateError::new(path.clone(), r))?;
            for r in refs {
                if !names.contains(r) {
                    return Err(TemplateError::new(
                        path,
                        format!("{{{{{r}}}}} references an undeclared parameter (declare it in [[param]])"),
                    ));
                }
            }
        }
        self.check_values(true)
    }

    /// Checks the values' shapes; with `lenient`, strings holding a `{{param}}` reference are
    /// checked after substitution instead.
    fn check_values(&self, lenient: bool) -> Result<(), TemplateError> {
        let skip = |s: &str| lenient && s.contains("{{");
        if let Some(m) = &self.resources.memory {
            crate::limits::parse_memory(m)
                .map_err(|e| TemplateError::new("resources.memory", e.to_string()))?;
        }
        if let Some(c) = &self.resources.cpus {
            crate::limits::parse_cpus(c)
                .map_err(|e| TemplateError::new("resources.cpus", e.to_string()))?;
        }
        if let Some(p) = self.resources.pids {
            if p < 1 {
                return Err(TemplateError::new(
                    "resources.pids",
                    "must be a positive number",
                ));
            }
        }
        if let Some(b) = &self.image.base {
            if b.trim().is_empty() {
                return Err(TemplateError::new("image.base", "must not be empty"));
            }
        }
        for (k, list) in [
            ("apt", &self.image.apt),
            ("npm", &self.image.npm),
            ("pip", &self.image.pip),
        ] {
            for (i, p) in list.iter().enumerate() {
                if !valid_package(p) {
                    return Err(TemplateError::new(
                        format!("image.{k}[{i}]"),
                        format!("{p:?} is not a package name"),
                    ));
                }
            }
        }
        let bound: BTreeSet<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();
        let mut dirs = BTreeSet::new();
        for (i, r) in self.repos.iter().enumerate() {
            let at = |k: &str| format!("repo[{i}].{k}");
            if !skip(&r.url) {
                let rest = r
                    .url
                    .strip_prefix("https://")
                    .or_else(|| r.url.strip_prefix("http://"));
                match rest {
                    Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
                    _ => {
                        return Err(TemplateError::new(
                            at("url"),
                            format!(
                                "{:?} is not an https:// (or http://) URL: berth clones over HTTP(S) through its egress proxy",
                                r.url
                            ),
                        ))
                    }
                }
                if rest.is_some_and(|r| r.split('/').next().unwrap_or("").contains('@')) {
                    return Err(TemplateError::new(
                        at("url"),
                        "must not hold credentials: name a secret in `credential` instead",
                    ));
                }
                if r.url
                    .bytes()
                    .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
                {
                    return Err(TemplateError::new(at("url"), "must not contain spaces"));
                }
            }
            if let Some(b) = &r.branch {
                if !skip(b) && !valid_branch(b) {
                    return Err(TemplateError::new(
                        at("branch"),
                        format!("{b:?} is not a branch name"),
                    ));
                }
            }
            if !skip(&r.dir) {
                check_rel_path(&r.dir).map_err(|e| TemplateError::new(at("dir"), e))?;
                if !dirs.insert(r.dir.as_str()) {
                    return Err(TemplateError::new(
                        at("dir"),
                        format!("{} is the directory of an earlier repository", r.dir),
                    ));
                }
            }
            if let Some(c) = &r.credential {
                if !bound.contains(c.as_str()) {
                    return Err(TemplateError::new(
                        at("credential"),
                        format!(
                            "secret {c} is not bound: add [[secret]] name = \"{c}\" with the hosts its real value may be sent to"
                        ),
                    ));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for (i, s) in self.secrets.iter().enumerate() {
            let at = |k: &str| format!("secret[{i}].{k}");
            if !valid_secret_name(&s.name) {
                return Err(TemplateError::new(
                    at("name"),
                    format!(
                        "{:?} is not a secret name (A-Z, 0-9, _, starting with a letter or _)",
                        s.name
                    ),
                ));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(TemplateError::new(
                    at("name"),
                    format!("secret {} is bound twice", s.name),
                ));
            }
            if s.hosts.is_empty() {
                return Err(TemplateError::new(
                    at("hosts"),
                    "name the hosts the secret's real value may be sent to",
                ));
            }
        }
        for (i, t) in self.egress.templates.iter().enumerate() {
            if crate::Name::parse(t).is_err() {
                return Err(TemplateError::new(
                    format!("egress.templates[{i}]"),
                    format!("{t:?} is not an egress template name"),
                ));
            }
        }
        for k in self.env.keys() {
            if !valid_env_name(k) {
                return Err(TemplateError::new(
                    format!("env.{k}"),
                    "is not an environment variable name",
                ));
            }
            if reserved_env(k) || bound.contains(k.as_str()) {
                return Err(TemplateError::new(
                    format!("env.{k}"),
                    "is set by berth (its proxy, CA bundle, home, or a bound secret)",
                ));
            }
        }
        if self.env.len() > MAX_ITEMS {
            return Err(TemplateError::new(
                "env",
                format!("at most {MAX_ITEMS} variables"),
            ));
        }
        let mut steps = BTreeSet::new();
        for (i, s) in self.setup.iter().enumerate() {
            if s.name.len() > 64 || s.name.bytes().any(|c| c.is_ascii_control()) {
                return Err(TemplateError::new(
                    format!("setup[{i}].name"),
                    "at most 64 characters, no control characters",
                ));
            }
            if !steps.insert(s.name.as_str()) {
                return Err(TemplateError::new(
                    format!("setup[{i}].name"),
                    format!("step {:?} is named twice", s.name),
                ));
            }
            if let Some(d) = &s.dir {
                if !skip(d) {
                    check_rel_path(d)
                        .map_err(|e| TemplateError::new(format!("setup[{i}].dir"), e))?;
                }
            }
        }
        if !lenient || !self.mcp.iter().any(|m| format!("{m:?}").contains("{{")) {
            crate::mcp::validate_all(&self.mcp).map_err(|e| {
                let i = self
                    .mcp
                    .iter()
                    .position(|m| m.name == e.server)
                    .map(|i| format!("mcp[{i}].{}", e.field))
                    .unwrap_or_else(|| "mcp".into());
                TemplateError::new(i, e.reason)
            })?;
        }
        if self.auto_session && self.agent.is_none() {
            return Err(TemplateError::new(
                "auto_session",
                "needs `agent` (the agent the session starts)",
            ));
        }
        Ok(())
    }

    /// The values of every parameter: those given, then defaults (`""` for an optional
    /// parameter without one). Unknown or missing required ones are errors.
    pub fn values(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ParamError> {
        for k in given.keys() {
            if !self.params.iter().any(|p| &p.name == k) {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                return Err(ParamError::Unknown {
                    name: k.clone(),
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                });
            }
        }
        let mut out = BTreeMap::new();
        for p in &self.params {
            let v = match (given.get(&p.name), &p.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) if p.required => {
                    return Err(ParamError::Missing {
                        name: p.name.clone(),
                        description: p
                            .description
                            .clone()
                            .unwrap_or_else(|| "no description".into()),
                    })
                }
                (None, None) => String::new(),
            };
            out.insert(p.name.clone(), v);
        }
        Ok(out)
    }

    /// The template with parameter values put in, checked again in full.
    pub fn instantiate(&self, given: &BTreeMap<String, String>) -> Result<Template, ParamError> {
        let values = self.values(given)?;
        let mut t = self.clone();
        for (_, s) in t.strings_mut() {
            *s = substitute(s, &values);
        }
        // An optional branch left empty means the remote's default branch.
        for r in &mut t.repos {
            if r.branch.as_deref() == Some("") {
                r.branch = None;
            }
        }
        t.check_values(false).map_err(ParamError::Invalid)?;
        Ok(t)
    }
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
