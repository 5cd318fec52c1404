//! The pull request's description: the task's prompt, agent, turns, cost and diff stat, and a
//! link back to the task (berth's public URL when one is configured, else the CLI command).
//! Best effort: what cannot be read is left out, never an error.

use berth_store::Task;

use super::MAX_DESCRIPTION;
use crate::state::AppState;

/// Longest part of the prompt quoted.
const MAX_PROMPT: usize = 1500;
/// Longest diff stat included.
const MAX_STAT: usize = 1500;

/// The Markdown description of task `t`.
pub async fn describe(state: &AppState, t: &Task) -> String {
    let turns = state
        .store
        .task_snapshots(&t.id)
        .await
        .map(|s| s.len())
        .unwrap_or(0)
        .max(1);
    let totals = state
        .store
        .task_call_totals(&[&t.id])
        .await
        .ok()
        .and_then(|m| m.get(&t.id).copied())
        .unwrap_or_default();
    let stat = crate::task_diff::diff(
        state,
        t,
        crate::task_diff::DiffOptions {
            turn: None,
            stat: true,
        },
    )
    .await
    .ok()
    .map(|d| d.diff)
    .filter(|d| !d.trim().is_empty());
    let link = public_url(state).map(|p| format!("{p}/#/tasks/{}", t.id));
    let facts = Facts {
        turns,
        cost: berth_api::usd_decimal(totals.cost_nusd),
        tokens: (totals.input_tokens, totals.output_tokens),
        stat,
        link,
    };
    render(t, &facts)
}

fn public_url(state: &AppState) -> Option<String> {
    state.web.sso.as_ref().map(|s| {
        s.config
            .public_url
            .as_str()
            .trim_end_matches('/')
            .to_owned()
    })
}

/// What the description says beside the task's own fields.
pub struct Facts {
    pub turns: usize,
    pub cost: String,
    pub tokens: (u64, u64),
    pub stat: Option<String>,
    pub link: Option<String>,
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// The description, at most [`MAX_DESCRIPTION`] characters.
pub fn render(t: &Task, f: &Facts) -> String {
    let prompt = cut(t.prompt.trim(), MAX_PROMPT)
        .lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    let agent = match &t.model {
        Some(m) => format!("{} ({m})", t.agent.as_str()),
        None => t.agent.as_str().to_owned(),
    };
    let mut out = format!(
        "Opened by berth for task `{}` in workspace `{}`.\n\n**Prompt**\n\n{prompt}\n\n\
         | agent | turns | cost | tokens (in / out) |\n|---|---|---|---|\n\
         | {agent} | {} | ${} | {} / {} |\n",
        t.id, t.workspace, f.turns, f.cost, f.tokens.0, f.tokens.1
    );
    if let Some(stat) = &f.stat {
        out.push_str(&format!(
            "\n**Changes**\n\n```\n{}\n```\n",
            cut(stat.trim_end(), MAX_STAT)
        ));
    }
    match &f.link {
        Some(l) => out.push_str(&format!("\nThe task in berth: {l}\n")),
        None => out.push_str(&format!(
            "\nThe task in berth: `berth task show {}`\n",
            t.id
        )),
    }
    cut(&out, MAX_DESCRIPTION)
}
