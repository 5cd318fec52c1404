// Delivering a task's work from the web UI: when the task page offers “Push” and “Open pull
// request”, and the request bodies (`POST /tasks/{task}/push`, `POST /tasks/{task}/pr`), the
// same calls `berth task push|pr` makes. Pure functions, so they are tested without a browser.

import type { Task } from './api';

/** Task states whose turn is over: the server delivers only then (`task_turn_running` else). */
const AT_REST = new Set(['completed', 'interrupted', 'failed', 'cancelled']);

/** Whether the task page offers delivery: the turn is over and the task's workspace still
 * exists (the server answers why not for the rest: no repository, nothing to push, no
 * credential, a stopped workspace). */
export function canDeliver(task: Pick<Task, 'workspace_removed'>, state: string): boolean {
  return AT_REST.has(state) && !task.workspace_removed;
}

/** Whether the page offers a pull request: delivery is possible and the task has none yet. */
export function canOpenPullRequest(task: Pick<Task, 'workspace_removed' | 'pull_request'>, state: string): boolean {
  return canDeliver(task, state) && !task.pull_request;
}

/** The push request: the branch on the remote when one is typed, else the task's own. */
export function pushRequest(branch: string): { branch?: string } {
  const b = branch.trim();
  return b ? { branch: b } : {};
}

/** The pull request's request: an empty title or base leaves the server's default (the
 * prompt's first line, the remote's default branch). */
export function pullRequestRequest(title: string, base: string, draft: boolean): { title?: string; base?: string; draft: boolean } {
  const body: { title?: string; base?: string; draft: boolean } = { draft };
  const t = title.trim();
  const b = base.trim();
  if (t) body.title = t;
  if (b) body.base = b;
  return body;
}
