//! An opencode task keeps its `opencode acp` process (ACP) between turns: a follow-up runs on
//! the warm process (no new process, no extra model request), the idle process is reaped after
//! `BERTH_AGENT_IDLE_SECONDS`, and the next turn starts a new process that resumes the session
//! with `session/load` (the replayed history is not reported again). Real opencode CLI in a real
//! workspace, against the scripted mock LLM: the scenario of `suite::codex_appserver`.

#[tokio::test]
async fn opencode_follow_ups_run_on_the_warm_acp_process_which_is_reaped_when_idle() {
    super::codex_appserver::follow_ups_on_the_warm_process("opencode", r"*opencode\ ac[p]*").await;
}
