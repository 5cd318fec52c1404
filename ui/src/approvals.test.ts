import { describe, expect, it } from 'vitest';
import { decisionBody, decisionPath, groupByWorkspace, headline, stateClass } from './approvals';
import type { Approval } from './api';

const a = (over: Partial<Approval>): Approval => ({
  id: 'r1',
  task: 'tk_1',
  workspace: 'acme/web',
  agent: 'claude',
  seq: 3,
  kind: 'command',
  tool: 'Bash',
  summary: 'run `ls`',
  input: {},
  risks: [],
  state: 'pending',
  created_at: '2026-01-01T00:00:00Z',
  ...over,
});

describe('approvals', () => {
  it('builds decision bodies: always only with approve, blank reasons dropped', () => {
    expect(decisionBody('approve')).toEqual({ decision: 'approve' });
    expect(decisionBody('approve', { always: true, reason: ' ok ' })).toEqual({ decision: 'approve', always_for_task: true, reason: 'ok' });
    expect(decisionBody('deny', { always: true, reason: '  ' })).toEqual({ decision: 'deny' });
    expect(decisionBody('deny', { reason: 'no network' })).toEqual({ decision: 'deny', reason: 'no network' });
  });

  it('encodes the task and request ids as one segment each', () => {
    expect(decisionPath({ task: 'tk 1', id: 'a/b?c' })).toBe('/tasks/tk%201/approvals/a%2Fb%3Fc');
  });

  it('says what a request would do in one line', () => {
    expect(headline(a({ command: 'echo hi > x\nrm -rf /' }))).toBe('$ echo hi > x');
    expect(headline(a({ kind: 'file_edit', tool: 'Write', path: '/w/a.txt', command: undefined }))).toBe('Write /w/a.txt');
    expect(headline(a({ kind: 'mcp_call', tool: 'mcp__gh__issue', summary: 'call MCP tool mcp__gh__issue' }))).toBe('call MCP tool mcp__gh__issue');
    expect(headline(a({ kind: 'tool_call', summary: '' }))).toBe('Bash');
  });

  it('groups the inbox by workspace, oldest first', () => {
    const list = [
      a({ id: 'late', workspace: 'acme/api', created_at: '2026-01-01T00:00:09Z' }),
      a({ id: 'first', workspace: 'acme/web', created_at: '2026-01-01T00:00:01Z' }),
      a({ id: 'second', workspace: 'acme/api', created_at: '2026-01-01T00:00:02Z' }),
      a({ id: 'third', workspace: 'acme/web', created_at: '2026-01-01T00:00:03Z' }),
    ];
    const g = groupByWorkspace(list);
    expect(g.map((x) => x.workspace)).toEqual(['acme/web', 'acme/api']);
    expect(g[0].items.map((x) => x.id)).toEqual(['first', 'third']);
    expect(g[1].items.map((x) => x.id)).toEqual(['second', 'late']);
  });

  it('colours states', () => {
    expect(stateClass('pending')).toBe('state-waiting');
    expect(stateClass('approved')).toBe('state-completed');
    expect(stateClass('denied')).toBe('state-failed');
    expect(stateClass('expired')).toBe('state-cancelled');
  });
});
