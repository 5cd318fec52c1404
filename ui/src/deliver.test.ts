import { describe, expect, it } from 'vitest';
import { canDeliver, canOpenPullRequest, openPullRequest, pullRequestRequest, pushBeforePullRequest, pushRequest } from './deliver';

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

describe('opening a pull request from the page', () => {
  const push = { remote: 'origin', branch: 'fix-42', commit: '3f2a9c1e0b7d3f2a9c1e0b7d3f2a9c1e0b7d3f2a', at: '2026-12-05T07:00:00.000Z' };
  const refusal = (code: string) => Object.assign(new Error(code), { status: 409, code });
  function fake(pushAnswer: () => unknown) {
    const calls: string[] = [];
    const send = async <T,>(path: string, body: unknown): Promise<T> => {
      calls.push(`${path} ${JSON.stringify(body)}`);
      if (path.endsWith('/push')) return pushAnswer() as T;
      return pr as T;
    };
    return { calls, send };
  }

  it('pushes first when asked, then opens it on the pushed branch', async () => {
    const f = fake(() => push);
    const got = await openPullRequest(f.send, 'tk_1', { draft: true }, {});
    expect(got).toEqual({ push, pr });
    expect(f.calls).toEqual(['/tasks/tk_1/push {}', '/tasks/tk_1/pr {"draft":true}']);
  });

  it('goes on when the remote already has the commits, stops on any other refusal', async () => {
    const has = fake(() => {
      throw refusal('nothing_to_push');
    });
    expect((await openPullRequest(has.send, 'tk_1', { draft: false }, { branch: 'fix-42' })).pr).toEqual(pr);
    expect(has.calls[0]).toEqual('/tasks/tk_1/push {"branch":"fix-42"}');
    expect(has.calls).toHaveLength(2);
    const rejected = fake(() => {
      throw refusal('push_rejected');
    });
    await expect(openPullRequest(rejected.send, 'tk_1', { draft: false }, {})).rejects.toThrow('push_rejected');
    expect(rejected.calls).toEqual(['/tasks/tk_1/push {}']);
  });

  it('does not push unless asked', async () => {
    const f = fake(() => push);
    await openPullRequest(f.send, 'tk_1', { draft: false }, null);
    expect(f.calls).toEqual(['/tasks/tk_1/pr {"draft":false}']);
  });

  it('pushes to the branch of the last push to origin, else the task branch', () => {
    expect(pushBeforePullRequest({ push: null })).toEqual({});
    expect(pushBeforePullRequest({ push })).toEqual({ branch: 'fix-42' });
    expect(pushBeforePullRequest({ push: { ...push, remote: 'fork' } })).toEqual({});
  });
});
