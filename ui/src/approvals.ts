// Agents' permission requests (approvals): the decision request body, how a request reads in a
// list, grouping the inbox by workspace, and how a request's state is shown.

import type { Approval } from './api';

export type Decision = 'approve' | 'deny';

/** The body of `POST /tasks/{task}/approvals/{req}`; `always` only goes with an approval, and an
 * empty reason is left out. */
export function decisionBody(decision: Decision, opts: { always?: boolean; reason?: string } = {}) {
  const body: { decision: Decision; always_for_task?: boolean; reason?: string } = { decision };
  if (decision === 'approve' && opts.always) body.always_for_task = true;
  const reason = opts.reason?.trim();
  if (reason) body.reason = reason;
  return body;
}

/** The API path deciding `a` (the task and the request id, each one path segment). */
export function decisionPath(a: Pick<Approval, 'task' | 'id'>): string {
  return `/tasks/${encodeURIComponent(a.task)}/approvals/${encodeURIComponent(a.id)}`;
}

/** What the request would do, in one line: the command, the path, or the summary. */
export function headline(a: Pick<Approval, 'kind' | 'command' | 'path' | 'summary' | 'tool'>): string {
  const first = (s: string) => s.split('\n')[0];
  if (a.kind === 'command' && a.command) return `$ ${first(a.command)}`;
  if (a.kind === 'file_edit' && a.path) return `${a.tool} ${a.path}`;
  return first(a.summary || a.tool);
}

/** Requests grouped by workspace, each group and each list oldest first. */
export function groupByWorkspace(list: Approval[]): Array<{ workspace: string; items: Approval[] }> {
  const groups = new Map<string, Approval[]>();
  const sorted = [...list].sort((a, b) => a.created_at.localeCompare(b.created_at) || a.seq - b.seq);
  for (const a of sorted) {
    const g = groups.get(a.workspace);
    if (g) g.push(a);
    else groups.set(a.workspace, [a]);
  }
  return [...groups.entries()].map(([workspace, items]) => ({ workspace, items }));
}

/** The badge class of a request's state (reusing the task state colours). */
export function stateClass(state: string): string {
  switch (state) {
    case 'pending':
      return 'state-waiting';
    case 'approved':
      return 'state-completed';
    case 'denied':
      return 'state-failed';
    default:
      return 'state-cancelled';
  }
}
