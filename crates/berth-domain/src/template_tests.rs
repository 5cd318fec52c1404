use std::collections::BTreeMap;

use super::*;

const GOOD: &str = r#"
description = "a web app"
agent = "claude"
auto_session = true
approval = "on-request"

[[param]]
name = "repo"
description = "the repository URL"
required = true

[[param]]
name = "branch"
default = "main"

[resources]
memory = "1g"
cpus = 2
pids = 512

[image]
apt = ["jq"]

[git]
name = "Agent"
email = "agent@example.com"

[[repo]]
url = "{{repo}}"
branch = "{{branch}}"
dir = "app"
credential = "GIT_TOKEN"

[[secret]]
name = "GIT_TOKEN"
hosts = ["git.example.com"]

[egress]
templates = ["npm"]
rules = ["allow git.example.com:443"]

[env]
APP_ENV = "dev-{{branch}}"

[[setup]]
name = "install"
run = "cd app && make"
timeout = "10m"

[[mcp]]
name = "tools"
type = "stdio"
command = "tools-server"
args = ["--repo", "{{repo}}"]
"#;

fn err(src: &str) -> TemplateError {
    parse(src).unwrap_err()
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_full_template_parses_and_instantiates() {
    let t = parse(GOOD).unwrap();
    assert_eq!(t.params.len(), 2);
    assert_eq!(t.resources.cpus.as_deref(), Some("2"));
    assert_eq!(t.setup[0].timeout, 600);
    assert_eq!(t.agent, Some(Agent::Claude));
    assert_eq!(t.approval, Some(crate::ApprovalPolicy::OnRequest));
    let i = t
        .instantiate(&params(&[("repo", "https://git.example.com/a/app.git")]))
        .unwrap();
    assert_eq!(i.repos[0].url, "https://git.example.com/a/app.git");
    assert_eq!(i.repos[0].branch.as_deref(), Some("main"));
    assert_eq!(i.env["APP_ENV"], "dev-main");
    match &i.mcp[0].transport {
        crate::mcp::McpTransport::Stdio { args, .. } => {
            assert_eq!(args[1], "https://git.example.com/a/app.git")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let e = err("description = \n");
    assert_eq!(e.path, "(file)");
    assert!(e.reason.contains("line 1"), "{e}");
}

#[test]
fn unknown_keys_are_errors_with_a_hint() {
    let e = err("[[setup]]\nname = \"a\"\nrun = \"true\"\ntimout = 5\n");
    assert_eq!(e.path, "setup[0].timout");
    assert!(e.reason.contains("did you mean \"timeout\""), "{e}");
    assert_eq!(err("colour = 1\n").path, "colour");
    assert_eq!(
        err("[[mcp]]\nname = \"x\"\ntype = \"stdio\"\ncommand = \"c\"\nagrs = []\n").path,
        "mcp[0].agrs"
    );
}

#[test]
fn wrong_types_are_errors() {
    let e = err("[[setup]]\nname = \"a\"\nrun = 5\n");
    assert_eq!(e.to_string(), "setup[0].run: must be a string, not integer");
    assert_eq!(err("auto_session = \"yes\"\n").path, "auto_session");
    let e = err("approval = \"sometimes\"\n");
    assert_eq!(e.path, "approval");
    assert!(e.to_string().contains("never, on-request or always"), "{e}");
    assert_eq!(err("setup = 1\n").path, "setup");
    assert_eq!(err("[env]\nA = 1\n").path, "env.A");
}

#[test]
fn missing_keys_are_errors() {
    assert_eq!(
        err("[[setup]]\nrun = \"x\"\n").to_string(),
        "setup[0].name: is missing"
    );
    assert_eq!(err("[[repo]]\ndir = \"x\"\n").path, "repo[0].url");
    assert_eq!(err("[[secret]]\nname = \"A\"\n").path, "secret[0].hosts");
}

#[test]
fn step_timeouts_are_checked() {
    let step = |t: &str| format!("[[setup]]\nname = \"a\"\nrun = \"true\"\ntimeout = {t}\n");
    assert_eq!(parse(&step("\"90s\"")).unwrap().setup[0].timeout, 90);
    assert_eq!(parse(&step("\"1h\"")).unwrap().setup[0].timeout, 3600);
    assert_eq!(parse(&step("30")).unwrap().setup[0].timeout, 30);
    for bad in ["0", "-1", "\"forever\"", "\"7h\"", "1.5"] {
        let e = err(&step(bad));
        assert_eq!(e.path, "setup[0].timeout", "{bad}");
    }
    let src = format!(
        "{}{}{}",
        step("1").replace("\"a\"", "\"one\""),
        step("1").replace("\"a\"", "\"two\""),
        step("\"soon\"")
    );
    assert_eq!(err(&src).path, "setup[2].timeout");
}

#[test]
fn references_must_name_declared_parameters() {
    let e = err("[env]\nX = \"{{nope}}\"\n");
    assert_eq!(e.path, "env.X");
    assert!(e.reason.contains("undeclared parameter"), "{e}");
    assert_eq!(err("[env]\nX = \"{{ Bad Name }}\"\n").path, "env.X");
    assert_eq!(err("[env]\nX = \"{{open\"\n").path, "env.X");
}

#[test]
fn parameters_are_checked() {
    let e = err("[[param]]\nname = \"a\"\n[[param]]\nname = \"a\"\n");
    assert_eq!(e.path, "param[1].name");
    assert_eq!(err("[[param]]\nname = \"A-b\"\n").path, "param[0].name");
    assert_eq!(
        err("[[param]]\nname = \"a\"\nrequired = true\ndefault = \"x\"\n").path,
        "param[0].default"
    );
}

#[test]
fn values_are_checked() {
    assert_eq!(
        err("[resources]\nmemory = \"lots\"\n").path,
        "resources.memory"
    );
    assert_eq!(err("[resources]\npids = 0\n").path, "resources.pids");
    assert_eq!(
        err("[image]\napt = [\"jq; rm -rf /\"]\n").path,
        "image.apt[0]"
    );
    assert_eq!(
        err("[[repo]]\nurl = \"git@host:x.git\"\n").path,
        "repo[0].url"
    );
    assert_eq!(
        err("[[repo]]\nurl = \"https://u:p@host/x.git\"\n").path,
        "repo[0].url"
    );
    assert_eq!(
        err("[[repo]]\nurl = \"https://host/x.git\"\ndir = \"../out\"\n").path,
        "repo[0].dir"
    );
    assert_eq!(
        err("[[repo]]\nurl = \"https://host/x.git\"\nbranch = \"a..b\"\n").path,
        "repo[0].branch"
    );
    assert_eq!(
        err("[[repo]]\nurl = \"https://host/x.git\"\ncredential = \"TOKEN\"\n").path,
        "repo[0].credential"
    );
    assert_eq!(
        err("[[repo]]\nurl = \"https://h/x.git\"\n[[repo]]\nurl = \"https://g/x.git\"\n").path,
        "repo[1].dir"
    );
    assert_eq!(
        err("[[secret]]\nname = \"lower\"\nhosts = [\"h\"]\n").path,
        "secret[0].name"
    );
    assert_eq!(err("[env]\nHTTPS_PROXY = \"x\"\n").path, "env.HTTPS_PROXY");
    assert_eq!(
        err("[egress]\ntemplates = [\"Bad_Name\"]\n").path,
        "egress.templates[0]"
    );
    assert_eq!(err("agent = \"clippy\"\n").path, "agent");
    assert_eq!(err("auto_session = true\n").path, "auto_session");
    assert_eq!(
        err("[[setup]]\nname = \"a\"\nrun = \"x\"\n[[setup]]\nname = \"a\"\nrun = \"y\"\n").path,
        "setup[1].name"
    );
}

#[test]
fn mcp_servers_are_validated() {
    let e = err("[[mcp]]\nname = \"Bad Name\"\ntype = \"stdio\"\ncommand = \"c\"\n");
    assert_eq!(e.path, "mcp[0].name");
    let e = err("[[mcp]]\nname = \"web\"\ntype = \"http\"\nurl = \"ftp://x\"\n");
    assert_eq!(e.path, "mcp[0].url");
    let e = err("[[mcp]]\nname = \"web\"\ntype = \"carrier-pigeon\"\n");
    assert_eq!(e.path, "mcp[0]");
}

#[test]
fn parameters_given_at_create_are_checked() {
    let t = parse(GOOD).unwrap();
    match t.instantiate(&BTreeMap::new()).unwrap_err() {
        ParamError::Missing { name, .. } => assert_eq!(name, "repo"),
        other => panic!("{other:?}"),
    }
    match t
        .instantiate(&params(&[("repo", "https://h/x"), ("colour", "red")]))
        .unwrap_err()
    {
        ParamError::Unknown { name, known } => {
            assert_eq!(name, "colour");
            assert_eq!(known, "repo, branch");
        }
        other => panic!("{other:?}"),
    }
    // A value that makes the template invalid.
    match t
        .instantiate(&params(&[("repo", "file:///etc")]))
        .unwrap_err()
    {
        ParamError::Invalid(e) => assert_eq!(e.path, "repo[0].url"),
        other => panic!("{other:?}"),
    }
    // An optional branch left empty: the remote's default.
    let i = t
        .instantiate(&params(&[("repo", "https://h/x.git"), ("branch", "")]))
        .unwrap();
    assert_eq!(i.repos[0].branch, None);
}

#[test]
fn dirs_default_to_the_repository_name() {
    let t = parse("[[repo]]\nurl = \"https://h/org/web-app.git\"\n").unwrap();
    assert_eq!(t.repos[0].dir, "web-app");
    assert_eq!(
        err("[[repo]]\nurl = \"{{u}}\"\n[[param]]\nname = \"u\"\n").path,
        "repo[0].dir"
    );
}

#[test]
fn typo_distance() {
    assert!(close("timeout", "timout"));
    assert!(close("timeout", "tiemout"));
    assert!(close("args", "agrs"));
    assert!(!close("timeout", "name"));
}
