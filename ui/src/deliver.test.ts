import { describe, expect, it } from 'vitest';
import { canDeliver, canOpenPullRequest, pullRequestRequest, pushRequest } from './deliver';

const pr = { provider: 'github', url: 'https://github.com/a/b/pull/1', number: 1, at: '2026-12-05T07:00:00.000Z' };

describe('delivery from the task page', () => {
  it('is offered once the turn is over, in an existing workspace', () => {
    for (const s of ['completed', 'interrupted', 'failed', 'cancelled']) expect(canDeliver({ workspace_removed: false }, s)).toBe(true);
    for (const s of ['queued', 'starting', 'running', 'waiting']) expect(canDeliver({ workspace_removed: false }, s)).toBe(false);
    expect(canDeliver({ workspace_removed: true }, 'completed')).toBe(false);
  });

  it('offers one pull request per task', () => {
    expect(canOpenPullRequest({ workspace_removed: false, pull_request: null }, 'completed')).toBe(true);
    expect(canOpenPullRequest({ workspace_removed: false, pull_request: pr }, 'completed')).toBe(false);
    expect(canOpenPullRequest({ workspace_removed: false, pull_request: null }, 'running')).toBe(false);
  });

  it('sends only what was typed', () => {
    expect(pushRequest('  ')).toEqual({});
    expect(pushRequest(' fix-42 ')).toEqual({ branch: 'fix-42' });
    expect(pullRequestRequest('', ' ', false)).toEqual({ draft: false });
    expect(pullRequestRequest(' Fix the parser ', 'main', true)).toEqual({ title: 'Fix the parser', base: 'main', draft: true });
  });
});
