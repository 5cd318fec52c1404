// Delivering a task's work from the web UI: when the task page offers “Push” and “Open pull
// request”, and the request bodies (`POST /tasks/{task}/push`, `POST /tasks/{task}/pr`), the
// same calls `berth task push|pr` makes. Pure functions, so they are tested without a browser.

import type { CreatePullRequestRequest, Task, TaskPullRequest, TaskPush } from './api';

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

/** The push before a pull request: to the branch of the task's last push to `origin` (the
 * pull request's remote) when there was one, so the pull request stays on that branch; else
 * the task's own branch. */
export function pushBeforePullRequest(task: Pick<Task, 'push'>): { branch?: string } {
  return task.push && task.push.remote === 'origin' ? { branch: task.push.branch } : {};
}

/** How the page calls the API (`post` in the app, a fake in tests). */
export type Send = <T>(path: string, body: unknown) => Promise<T>;

/** Opens the task's pull request, pushing first when given the push's body: a push the remote
 * already has (`nothing_to_push`) is no reason to stop, any other refusal is (and no pull
 * request is asked for). `id` is the task id as one URL path segment. */
export async function openPullRequest(
  send: Send,
  id: string,
  body: CreatePullRequestRequest,
  pushFirst: { branch?: string } | null,
): Promise<{ push?: TaskPush; pr: TaskPullRequest }> {
  let push: TaskPush | undefined;
  if (pushFirst) {
    try {
      push = await send<TaskPush>(`/tasks/${id}/push`, pushFirst);
    } catch (e) {
      if ((e as { code?: string }).code !== 'nothing_to_push') throw e;
    }
  }
  const pr = await send<TaskPullRequest>(`/tasks/${id}/pr`, body);
  return { push, pr };
}
