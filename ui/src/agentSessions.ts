// Interactive agent sessions in the web UI: the agents a workspace page offers next to “New
// session”, the request that starts one, where its terminal opens, and when a task can be
// continued interactively. Pure functions, so they are tested without a browser.

/** The agents offered, in the order the buttons show, with their product names. */
export const AGENT_BUTTONS = [
  { agent: 'claude', label: 'Claude Code' },
  { agent: 'codex', label: 'Codex' },
  { agent: 'gemini', label: 'Gemini' },
  { agent: 'opencode', label: 'OpenCode' },
] as const;

export type AgentName = (typeof AGENT_BUTTONS)[number]['agent'];

/** The body of `POST /workspaces/{ws}/sessions` that starts `agent`'s TUI (no `cmd`: the two
 * are exclusive). The size is the browser's terminal guess, clamped to what the API takes. */
export function agentSessionRequest(agent: AgentName, cols?: number, rows?: number): { agent: AgentName; cols?: number; rows?: number } {
  const clamp = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? undefined : Math.min(1000, Math.max(1, Math.floor(n))));
  const body: { agent: AgentName; cols?: number; rows?: number } = { agent };
  const c = clamp(cols);
  const r = clamp(rows);
  if (c !== undefined) body.cols = c;
  if (r !== undefined) body.rows = r;
  return body;
}

/** The hash route of a session's terminal page. */
export function terminalRoute(ws: string, session: { name?: string; id: string }): string {
  return `/workspaces/${ws}/terminal/${encodeURIComponent(session.name || session.id)}`;
}

/** Whether a task may be taken over now: its turn is over (not final), its agent reported a
 * conversation to resume, and it is not codex (whose thread cannot go back to headless turns
 * after an interactive session: 422 `takeover_unsupported`). The server decides in the end (409
 * `task_turn_running` / `task_interactive`); this only hides a button that cannot work. */
export function canContinueInteractively(task: { state: string; agent: string; agent_session_id?: string | null }): boolean {
  return (task.state === 'completed' || task.state === 'interrupted') && !!task.agent_session_id && task.agent !== 'codex';
}

/** A rough terminal size for a new session from the window's size (an xterm cell is about
 * 9×17 px); the terminal page resizes the session to fit once it is open. */
export function guessTerminalSize(width: number, height: number): { cols: number; rows: number } {
  return { cols: Math.max(20, Math.floor(width / 9)), rows: Math.max(10, Math.floor((height - 120) / 17)) };
}
