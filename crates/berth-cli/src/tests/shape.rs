//! The command-line surface, pinned: every subcommand's `--help` against the snapshot
//! `help.txt`, and what a representative command line of every subcommand parses to (the leaf
//! subcommand and each argument's raw values, independent of the Rust types they land in).
//! Set `BERTH_UPDATE_SNAPSHOTS=1` to rewrite `help.txt` after an intended change.

use std::collections::BTreeSet;

use clap::parser::ValueSource;
use clap::CommandFactory;

use super::Cli;

const HELP_SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tests/help.txt");

/// What `berth PATH --help` prints, for the top level and every subcommand, depth first, each
/// under a header line.
fn help_pages() -> String {
    let mut paths = Vec::new();
    subcommand_paths(&Cli::command(), &mut Vec::new(), &mut paths);
    let mut out = String::new();
    for path in paths {
        let args = std::iter::once("berth")
            .chain(path.iter().map(String::as_str))
            .chain(["--help"]);
        let help = match Cli::command().try_get_matches_from(args) {
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.render().to_string(),
            other => panic!("berth {path:?} --help did not print help: {other:?}"),
        };
        out.push_str(&format!("===== berth {}\n", path.join(" ")).replace(" \n", "\n"));
        out.push_str(&without_env_values(&help));
    }
    out
}

/// Every subcommand path (the top level `[]` first), depth first, `help` left out.
fn subcommand_paths(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(path.clone());
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        path.push(sub.get_name().to_owned());
        subcommand_paths(sub, path, out);
        path.pop();
    }
}

/// `[env: BERTH_URL=http://…]` → `[env: BERTH_URL=]`: help shows the variables' current values.
fn without_env_values(help: &str) -> String {
    let mut out = String::new();
    let mut rest = help;
    while let Some(i) = rest.find("[env: ") {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let end = tail.find(']').unwrap_or(tail.len());
        let var = &tail[..end];
        match var.split_once('=') {
            Some((name, _)) => out.push_str(&format!("{name}=")),
            None => out.push_str(var),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_subcommand_help_matches_the_snapshot() {
    let pages = help_pages();
    if std::env::var_os("BERTH_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(HELP_SNAPSHOT, &pages).unwrap();
        return;
    }
    let want = std::fs::read_to_string(HELP_SNAPSHOT).unwrap();
    if pages != want {
        let first = pages
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(pages.lines().count().min(want.lines().count()));
        panic!(
            "the help differs from {HELP_SNAPSHOT} at line {}:\n  now:  {:?}\n  was:  {:?}\n\
             (if intended: BERTH_UPDATE_SNAPSHOTS=1 cargo test -p berth-cli help)",
            first + 1,
            pages.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

/// Words of a command line; `'…'` quotes one word with spaces.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let (word, tail) = match rest.strip_prefix('\'') {
            Some(quoted) => quoted.split_once('\'').unwrap(),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        out.push(word.to_owned());
        rest = tail.trim_start();
    }
    out
}

/// `PATH: id=value …` of a parsed command line: the leaf subcommand, then its arguments in
/// name order with their raw values (defaults included, values from the environment not).
fn parsed(line: &str) -> Result<String, clap::Error> {
    let matches = Cli::command()
        .try_get_matches_from(std::iter::once("berth".to_owned()).chain(words(line)))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut path = Vec::new();
    let mut m = &matches;
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_owned());
        cmd = cmd.find_subcommand(name).unwrap().clone();
        m = sub;
    }
    // Arguments only: the groups clap derives are named after Rust types.
    let is_arg = |id: &str| cmd.get_arguments().any(|a| a.get_id() == id);
    let mut args = Vec::new();
    let mut ids: Vec<&str> = m
        .ids()
        .map(|id| id.as_str())
        .filter(|id| is_arg(id))
        .collect();
    ids.sort_unstable();
    for id in ids {
        if m.value_source(id) == Some(ValueSource::EnvVariable) {
            continue;
        }
        let Ok(Some(raw)) = m.try_get_raw(id) else {
            continue;
        };
        let vals: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        args.push(format!("{id}={}", vals.join(",")));
    }
    Ok(format!("{}: {}", path.join(" "), args.join(" ")))
}

/// A command line of every subcommand, and what it parses to.
const PARSES: &[(&str, &str)] = &[
    (
        "login http://h:1 --token t",
        "login: token=t url=http://h:1",
    ),
    (
        "doctor --json --url http://h:1",
        "doctor: json=true url=http://h:1",
    ),
    (
        "workspace create acme/web --tenant acme --memory 512m --cpus 0.5 --pids 64 --image img --network bridge --allow a.com --allow 'deny b.com POST /x' --egress-template npm --egress-template ci --secret GH:github.com --secret-env K --secret-file F --json",
        "workspace create: allow=a.com,deny b.com POST /x cpus=0.5 egress_template=npm,ci image=img json=true memory=512m name=acme/web network=bridge no_follow=false pids=64 secret=GH:github.com secret_env=K secret_file=F tenant=acme",
    ),
    (
        "workspace create web",
        "workspace create: json=false name=web no_follow=false",
    ),
    (
        "workspace update acme/web --memory 1g --cpus 2 --pids 300 --secret GH:github.com --secret-env K --secret-file F --remove-secret OLD --egress-template npm --remove-egress-template ci --approval always --mcp-file m.json --json",
        "workspace update: approval=always cpus=2 egress_template=npm json=true mcp_file=m.json memory=1g pids=300 remove_egress_template=ci remove_secret=OLD secret=GH:github.com secret_env=K secret_file=F ws=acme/web",
    ),
    (
        "workspace update w",
        "workspace update: json=false ws=w",
    ),
    (
        "workspace ls --tenant acme --json --token t",
        "workspace list: json=true tenant=acme token=t",
    ),
    (
        "workspace --url http://x:1 --token t list --json",
        "workspace list: json=true token=t url=http://x:1",
    ),
    (
        "workspace show acme/web --json",
        "workspace show: json=true ws=acme/web",
    ),
    (
        "workspace start w --json",
        "workspace start: json=true ws=w",
    ),
    (
        "workspace stop w",
        "workspace stop: json=false ws=w",
    ),
    (
        "workspace remove w --volume",
        "workspace rm: volume=true ws=w",
    ),
    (
        "workspace backup w -o out.tar.zst --pause",
        "workspace backup: output=out.tar.zst pause=true ws=w",
    ),
    (
        "workspace restore f.tar.zst --name n --tenant t --json",
        "workspace restore: file=f.tar.zst json=true name=n tenant=t",
    ),
    (
        "exec acme/web -e A=1 --env B=x=y --cwd /tmp -- ls -la",
        "exec: cmd=ls,-la cwd=/tmp env=A=1,B=x=y ws=acme/web",
    ),
    (
        "exec w sh -c 'echo --url'",
        "exec: cmd=sh,-c,echo --url ws=w",
    ),
    (
        "session new w --name s --json -- htop -d 5",
        "session new: cmd=htop,-d,5 json=true name=s ws=w",
    ),
    (
        "session new w --agent codex --dir ~/repo --model gpt-x --name c",
        "session new: agent=codex dir=~/repo json=false model=gpt-x name=c ws=w",
    ),
    (
        "session ls w --json",
        "session list: json=true ws=w",
    ),
    (
        "session show w s --json",
        "session show: json=true session=s ws=w",
    ),
    (
        "session capture w s",
        "session capture: session=s ws=w",
    ),
    (
        "session remove w s",
        "session rm: session=s ws=w",
    ),
    (
        "attach w s --url http://h:1",
        "attach: session=s url=http://h:1 ws=w",
    ),
    (
        "attach w",
        "attach: ws=w",
    ),
    (
        "task run acme/web --agent codex --model o3 --dir ~/src --worktree fix-1 -d --json --raw -v fix the '--flaky test'",
        "task run: agent=codex detach=true dir=~/src json=true model=o3 prompt=fix,the,--flaky test raw=true verbose=true worktree=fix-1 ws=acme/web",
    ),
    (
        "task run w --agent claude -- -x y",
        "task run: agent=claude detach=false json=false prompt=-x,y raw=false verbose=false ws=w",
    ),
    (
        "task ls --workspace w --state waiting --json --raw",
        "task list: json=true raw=true state=waiting workspace=w",
    ),
    (
        "task show t1 --json --raw",
        "task show: json=true raw=true task=t1",
    ),
    (
        "task logs t1 -f --json --raw --after 5 -v",
        "task logs: after=5 follow=true json=true raw=true task=t1 verbose=true",
    ),
    (
        "task logs t1",
        "task logs: after=0 follow=false json=false raw=false task=t1 verbose=false",
    ),
    (
        "task send t1 --wait --json --raw -v and now docs",
        "task send: interrupt=false json=true raw=true task=t1 text=and,now,docs verbose=true wait=true",
    ),
    (
        "task send t1 --interrupt do X instead",
        "task send: interrupt=true json=false raw=false task=t1 text=do,X,instead verbose=false wait=false",
    ),
    (
        "task cancel t1",
        "task cancel: task=t1",
    ),
    (
        "task approve t1 r1 --always-for-this-task --reason ok --json",
        "task approve: always_for_this_task=true json=true reason=ok req=r1 task=t1",
    ),
    (
        "task approve t1",
        "task approve: always_for_this_task=false json=false task=t1",
    ),
    (
        "task deny t1 r1 --reason 'not now'",
        "task deny: json=false reason=not now req=r1 task=t1",
    ),
    (
        "task approvals t1 --pending --json",
        "task approvals: json=true pending=true task=t1",
    ),
    (
        "task inbox",
        "task inbox: json=false",
    ),
    (
        "task diff t1 --stat --turn 2",
        "task diff: json=false mbox=false patch=false stat=true task=t1 turn=2",
    ),
    (
        "task push t1 --remote up --branch fix/x",
        "task push: branch=fix/x json=false remote=up task=t1",
    ),
    (
        "task pr t1 --title T --draft --base main --secret GH_TOKEN --push",
        "task pr: base=main draft=true json=false push=true secret=GH_TOKEN task=t1 title=T",
    ),
    (
        "notify add https://h/x --channel slack --workspace w --kinds task.failed,task.waiting --json",
        "notify add: channel=slack json=true kinds=task.failed,task.waiting target=https://h/x workspace=w",
    ),
    (
        "notify list",
        "notify list: json=false",
    ),
    (
        "access list --workspace w --state denied --json",
        "access list: all=false json=true state=denied workspace=w",
    ),
    (
        "access approve ar_1 --ttl 30m --reason ok",
        "access approve: always=false id=ar_1 json=false reason=ok ttl=30m",
    ),
    (
        "access deny ar_1 --reason no",
        "access deny: id=ar_1 json=false reason=no",
    ),
    (
        "access comment ar_1 hello",
        "access comment: id=ar_1 json=false text=hello",
    ),
    (
        "notify rm nsub_1",
        "notify rm: id=nsub_1",
    ),
    (
        "notify test nsub_1",
        "notify test: id=nsub_1 json=false",
    ),
    (
        "notify log nsub_1 --limit 5",
        "notify log: id=nsub_1 json=false limit=5",
    ),
    (
        "task run w --agent claude --approval on-request fix it",
        "task run: agent=claude approval=on-request detach=false json=false prompt=fix,it raw=false verbose=false ws=w",
    ),
    (
        "task attach t1 --name s --json",
        "task attach: json=true name=s task=t1",
    ),
    (
        "audit --limit 5 --target acme/web --json",
        "audit: json=true limit=5 target=acme/web",
    ),
    (
        "usage --tenant a --workspace w --since 7d --json",
        "usage: by_session=false csv=false json=true since=7d tenant=a workspace=w",
    ),
    (
        "usage --session as_1 --by-session",
        "usage: by_session=true csv=false json=false session=as_1",
    ),
    (
        "usage --by task --since 2026-11-01 --until 2026-12-01 --task tk_1 --csv",
        "usage: by=task by_session=false csv=true json=false since=2026-11-01 task=tk_1 until=2026-12-01",
    ),
    (
        "egress rules w --json",
        "egress rules: json=true ws=w",
    ),
    (
        "egress allow w registry.npmjs.org:443 GET /x",
        "egress allow: rule=registry.npmjs.org:443,GET,/x ws=w",
    ),
    (
        "egress deny w evil.com",
        "egress deny: rule=evil.com ws=w",
    ),
    (
        "egress rm w 2",
        "egress rm: index=2 ws=w",
    ),
    (
        "egress log w -f --json",
        "egress log: follow=true json=true ws=w",
    ),
    (
        "egress attach w npm",
        "egress attach: template=npm ws=w",
    ),
    (
        "egress detach w npm",
        "egress detach: template=npm ws=w",
    ),
    (
        "egress template ls --tenant acme --json",
        "egress template list: json=true tenant=acme",
    ),
    (
        "egress template show npm --tenant acme --json",
        "egress template show: json=true name=npm tenant=acme",
    ),
    (
        "egress template show npm",
        "egress template show: json=false name=npm",
    ),
    (
        "egress template set --tenant acme ci 'allow a.com:443' b.com --description 'CI hosts' --json",
        "egress template set: description=CI hosts json=true name=ci rules=allow a.com:443,b.com tenant=acme",
    ),
    (
        "egress template remove --tenant acme ci --force",
        "egress template rm: force=true name=ci tenant=acme",
    ),
    (
        "secret set --tenant acme GH",
        "secret set: name=GH tenant=acme",
    ),
    (
        "secret list --tenant acme --json",
        "secret list: json=true tenant=acme",
    ),
    (
        "secret rm --tenant acme GH",
        "secret rm: name=GH tenant=acme",
    ),
    ("user list --json", "user list: json=true"),
    ("user disable usr_1", "user disable: id=usr_1"),
    ("user enable usr_1", "user enable: id=usr_1"),
    (
        "budget set --tenant acme --tokens 1000 --cost 2.5 --period month --json",
        "budget set: cost=2.5 json=true period=month tenant=acme tokens=1000",
    ),
    (
        "budget set --workspace w --tokens 10",
        "budget set: json=false period=day tokens=10 workspace=w",
    ),
    (
        "budget list --json",
        "budget list: json=true",
    ),
    (
        "budget rm --workspace w",
        "budget rm: workspace=w",
    ),
    (
        "image status --json",
        "image status: json=true",
    ),
    (
        "image build --force",
        "image build: force=true",
    ),
    (
        "image prune --dry-run",
        "image prune: dry_run=true json=false",
    ),
    (
        "version --url http://h:1",
        "version: url=http://h:1",
    ),
    (
        "whoami --token t",
        "whoami: token=t",
    ),
    (
        "token create --name alice --tenant acme --role member --expires 30d",
        "token create: expires=30d json=false name=alice role=member tenant=acme",
    ),
    (
        "token list --json",
        "token list: json=true",
    ),
    (
        "token revoke tok_1",
        "token revoke: id=tok_1",
    ),
    (
        "tenant list",
        "tenant list: json=false",
    ),
    ("mcp --url http://h:1", "mcp: url=http://h:1"),
    (
        "workspace create web --tenant acme --template node --param repo=https://h/x.git --param branch=dev",
        "workspace create: json=false name=web no_follow=false param=repo=https://h/x.git,branch=dev template=node tenant=acme",
    ),
    (
        "workspace provision acme/web --retry",
        "workspace provision: json=false retry=true upgrade=false ws=acme/web",
    ),
    (
        "template set --tenant acme node node.toml",
        "template set: file=node.toml json=false name=node tenant=acme",
    ),
    (
        "template import --tenant acme node --devcontainer .devcontainer/devcontainer.json --dry-run",
        "template import: devcontainer=.devcontainer/devcontainer.json dry_run=true json=false name=node tenant=acme",
    ),
    (
        "template show --tenant acme node --revision 2",
        "template show: json=false name=node revision=2 tenant=acme",
    ),
    ("template list --tenant acme", "template list: json=false tenant=acme"),
    ("template rm --tenant acme node", "template rm: name=node tenant=acme"),
    (
        "tenant quota acme --max-workspaces 5 --memory 8g --cpus 4 --max-tasks 3",
        "tenant quota: clear=false cpus=4 json=false max_tasks=3 max_workspaces=5 memory=8g tenant=acme",
    ),
];

/// Command lines that must be refused, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "access approve ar_1 --always --ttl 1h",
        "a rule kept always has no expiry",
    ),
    (
        "token create --name x --role superuser",
        "roles are admin, owner, member, viewer",
    ),
    (
        "tenant quota acme --clear --memory 8g",
        "--clear removes every limit",
    ),
    ("nosuch", "no such command"),
    (
        "session new w --agent claude -- bash",
        "--agent conflicts with a command",
    ),
    ("session new w --dir ~/repo", "--dir only with --agent"),
    ("session new w --agent vim", "an unknown agent"),
    ("workspace", "a subcommand is required"),
    ("image", "a subcommand is required"),
    ("workspace create", "a name is required"),
    ("workspace create x --network host", "only none or bridge"),
    ("workspace create x --pids many", "--pids is a number"),
    ("exec w", "a command is required"),
    ("exec w --env NOEQ -- ls", "--env is K=V"),
    ("session new", "a workspace is required"),
    ("attach", "a workspace is required"),
    ("task run w hi", "--agent is required"),
    ("task run w --agent claude", "a prompt is required"),
    ("task run w --agent cursor hi", "not a known agent"),
    ("task ls --state done", "not a task state"),
    ("task send t1", "a message is required"),
    (
        "task run w --agent claude --approval sometimes x",
        "not a policy",
    ),
    ("task approve", "a task is required"),
    ("egress allow w", "a rule is required"),
    ("egress rm w x", "the position is a number"),
    ("egress attach w", "a template is required"),
    ("egress template set ci a.com", "--tenant is required"),
    ("egress template set --tenant acme ci", "a rule is required"),
    ("egress template rm ci", "--tenant is required"),
    ("secret set GH", "--tenant is required"),
    ("template set node", "--tenant is required"),
    (
        "template import --tenant acme node",
        "--devcontainer is required",
    ),
    ("workspace create w --param a=b", "--param needs --template"),
    (
        "workspace provision w --retry --upgrade",
        "not both --retry and --upgrade",
    ),
    (
        "budget set --tokens 5",
        "--tenant or --workspace is required",
    ),
    (
        "budget set --tenant a --workspace b",
        "not both --tenant and --workspace",
    ),
    (
        "budget set --tenant a --period week",
        "only day, month or total",
    ),
];

#[test]
fn a_command_line_of_every_subcommand_parses_as_before() {
    if std::env::var_os("BERTH_PRINT_PARSES").is_some() {
        for (line, _) in PARSES {
            println!(
                "    ({line:?}, {:?}),",
                parsed(line).map_err(|e| e.to_string())
            );
        }
    }
    for (line, want) in PARSES {
        match parsed(line) {
            Ok(got) => assert_eq!(&got, want, "berth {line}"),
            Err(e) => panic!("berth {line}: {e}"),
        }
    }
    for (line, why) in REFUSED {
        assert!(
            parsed(line).is_err(),
            "berth {line} should be refused: {why}"
        );
    }
    let mut paths = Vec::new();
    subcommand_paths(&Cli::command(), &mut Vec::new(), &mut paths);
    // The leaves: paths that no other path extends.
    let all: BTreeSet<String> = paths
        .iter()
        .filter(|p| !paths.iter().any(|q| q.len() > p.len() && q.starts_with(p)))
        .map(|p| p.join(" "))
        .collect();
    let covered: BTreeSet<String> = PARSES
        .iter()
        .map(|(_, want)| want.split_once(':').map_or(*want, |(p, _)| p).to_owned())
        .collect();
    let missing: Vec<&String> = all.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "no command line in PARSES for: {missing:?}"
    );
}
