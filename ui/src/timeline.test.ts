import { describe, expect, it } from 'vitest';
import { diffLineClass, formatElapsed, itemType, Timeline, toolElapsedMs, truncate } from './timeline';
import type { TaskEvent } from './api';

const at = '2026-01-01T00:00:00Z';
const e = (seq: number, type: string, rest: Record<string, unknown> = {}): TaskEvent => ({ seq, at, type, ...rest });

describe('Timeline', () => {
  it('accumulates deltas and replaces them with the final message (text shown once)', () => {
    const t = new Timeline();
    t.apply(e(1, 'user_message', { text: 'hi' }));
    t.apply(e(2, 'message_delta', { text: 'Hel' }));
    t.apply(e(3, 'message_delta', { text: 'lo' }));
    expect(t.items.map(itemType)).toEqual(['user_message', 'message_delta']);
    expect(t.items[1]).toMatchObject({ text: 'Hello', streaming: true });
    t.apply(e(4, 'message', { text: 'Hello!' }));
    expect(t.items.map(itemType)).toEqual(['user_message', 'message']);
    expect(t.items[1]).toMatchObject({ text: 'Hello!', streaming: false });
    // a message with no deltas before it is its own item
    t.apply(e(5, 'message', { text: 'DONE' }));
    expect(t.items.filter((i) => i.kind === 'assistant').map((i) => (i as { text: string }).text)).toEqual(['Hello!', 'DONE']);
  });

  it('joins tool results to their calls and dedupes by seq', () => {
    const t = new Timeline();
    const evs = [
      e(1, 'status', { state: 'running' }),
      e(2, 'tool_call', { call_id: 'c1', name: 'Bash', input: { command: 'echo hi > hello.txt' } }),
      e(3, 'tool_result', { call_id: 'c1', output: '', exit_code: 0, is_error: false }),
      e(4, 'usage', { input_tokens: 10, output_tokens: 5, cached_input_tokens: 0 }),
      e(5, 'usage', { input_tokens: 1, output_tokens: 2, cached_input_tokens: 0, cost_usd: 0.5 }),
      e(6, 'status', { state: 'completed' }),
    ];
    evs.forEach((x) => t.apply(x));
    expect(evs.map((x) => t.apply(x))).toEqual([false, false, false, false, false, false]);
    expect(t.items.map((i) => i.kind)).toEqual(['status', 'tool', 'usage', 'usage', 'status']);
    expect(t.items[1]).toMatchObject({ name: 'Bash', result: { exitCode: 0, isError: false } });
    expect(t.usage).toEqual({ input: 11, output: 7, cached: 0, cost: 0.5 });
    expect(t.state).toBe('completed');
  });

  it('ends a tool card without a result when its turn or task ends (no stale "running")', () => {
    const t = new Timeline();
    t.apply(e(1, 'tool_call', { call_id: 'a', name: 'Bash', input: { command: 'sleep 99' } }));
    t.apply(e(2, 'status', { state: 'waiting' }));
    expect(t.items[0]).not.toHaveProperty('ended');
    t.apply(e(3, 'status', { state: 'cancelled', reason: 'cancelled by admin' }));
    expect(t.items[0]).toMatchObject({ kind: 'tool', ended: 'cancelled' });
    // a card with a result stays as it was; a later turn's end does not touch it
    const u = new Timeline();
    u.apply(e(1, 'tool_call', { call_id: 'b', name: 'Bash', input: {} }));
    u.apply(e(2, 'tool_result', { call_id: 'b', output: 'ok' }));
    u.apply(e(3, 'tool_call', { call_id: 'c', name: 'Bash', input: {} }));
    u.apply(e(4, 'turn_completed', {}));
    expect(u.items[0]).toMatchObject({ result: { output: 'ok' } });
    expect(u.items[0]).not.toHaveProperty('ended');
    expect(u.items[1]).toMatchObject({ kind: 'tool', callId: 'c', ended: 'turn ended' });
  });

  it('an interrupted turn ends its running tool cards and says who interrupted', () => {
    const t = new Timeline();
    t.apply(e(1, 'tool_call', { call_id: 'a', name: 'Bash', input: { command: 'sleep 60' } }));
    t.apply(e(2, 'turn_interrupted', { by: 'alice (member)' }));
    t.apply(e(3, 'user_message', { text: 'do X instead' }));
    expect(t.items[0]).toMatchObject({ kind: 'tool', ended: 'interrupted' });
    expect(t.items[1]).toMatchObject({ kind: 'turn_interrupted', by: 'alice (member)', newConversation: false });
    expect(t.items[2]).toMatchObject({ kind: 'user', text: 'do X instead' });
    t.apply(e(4, 'turn_interrupted', { new_conversation: true }));
    expect(t.items[3]).toMatchObject({ kind: 'turn_interrupted', newConversation: true });
  });

  it('appends streamed tool output to the running card until the result replaces it', () => {
    const t = new Timeline();
    t.apply(e(1, 'tool_call', { call_id: 'a', name: 'Bash', input: {} }));
    t.apply(e(2, 'tool_output', { call_id: 'a', text: 'line 1\n' }));
    t.apply(e(3, 'tool_output', { call_id: 'a', text: 'line 2\n' }));
    expect(t.items).toHaveLength(1);
    expect(t.items[0]).toMatchObject({ kind: 'tool', live: 'line 1\nline 2\n' });
    t.apply(e(4, 'tool_result', { call_id: 'a', output: 'line 1\nline 2\n' }));
    t.apply(e(5, 'tool_output', { call_id: 'a', text: 'late' }));
    expect(t.items[0]).toMatchObject({ result: { output: 'line 1\nline 2\n' }, live: 'line 1\nline 2\n' });
  });

  it('times tool calls: to the result, to the end of the turn, or up to now while running', () => {
    const at = (sec: number) => new Date(Date.UTC(2026, 11, 4, 12, 0, sec)).toISOString();
    const t = new Timeline();
    t.apply({ seq: 1, at: at(0), type: 'tool_call', call_id: 'a', name: 'Bash', input: {} });
    t.apply({ seq: 2, at: at(7), type: 'tool_result', call_id: 'a', output: 'ok' });
    t.apply({ seq: 3, at: at(8), type: 'tool_call', call_id: 'b', name: 'Bash', input: {} });
    expect(toolElapsedMs(t.items[0] as never, 0)).toBe(7000);
    // running: ticking up to now
    expect(toolElapsedMs(t.items[1] as never, Date.parse(at(20)))).toBe(12000);
    t.apply({ seq: 4, at: at(30), type: 'status', state: 'cancelled' });
    // ended with its task: the time stops there
    expect(toolElapsedMs(t.items[1] as never, Date.parse(at(59)))).toBe(22000);
    expect(formatElapsed(850)).toBe('850 ms');
    expect(formatElapsed(12_400)).toBe('12 s');
    expect(formatElapsed(185_000)).toBe('3 min 05 s');
    expect(formatElapsed(3_720_000)).toBe('1 h 02 min');
  });

  it('keeps unknown types as raw', () => {
    const t = new Timeline();
    t.apply(e(1, 'something_new', { x: 1 }));
    t.apply(e(2, 'raw', { data: { y: 2 } }));
    t.apply(e(3, 'log', { line: 'stderr' }));
    expect(t.items.map((i) => i.kind)).toEqual(['raw', 'raw', 'log']);
  });
});

describe('helpers', () => {
  it('truncates long text', () => {
    expect(truncate('abc', 5)).toEqual({ head: 'abc', more: 0 });
    expect(truncate('abcdefg', 5)).toEqual({ head: 'abcde', more: 2 });
  });
  it('classifies diff lines', () => {
    expect(['+++ b/x', '--- a/x', '@@ -1 +1 @@', '+a', '-b', ' c', 'diff --git a b'].map(diffLineClass)).toEqual(['meta', 'meta', 'hunk', 'add', 'del', '', 'meta']);
  });

  it('joins an approval decision to its request', () => {
    const t = new Timeline();
    t.apply(e(1, 'approval_request', { id: 'r1', kind: 'command', tool: 'Bash', summary: 'run ls', command: 'ls', risks: [] }));
    t.apply(e(2, 'status', { state: 'waiting' }));
    expect(t.items.map(itemType)).toEqual(['approval_request', 'status']);
    expect(t.items[0]).toMatchObject({ kind: 'approval', id: 'r1', request: { command: 'ls', kind: 'command' } });
    t.apply(e(3, 'approval_resolved', { id: 'r1', decision: 'denied', by: 'alice (member)', reason: 'no' }));
    expect(t.items.map(itemType)).toEqual(['approval_request', 'status']);
    expect(t.items[0]).toMatchObject({ resolved: { decision: 'denied', by: 'alice (member)', reason: 'no', seq: 3 } });
    // A decision whose request was not seen still shows.
    t.apply(e(4, 'approval_resolved', { id: 'r9', decision: 'approved' }));
    expect(t.items[2]).toMatchObject({ kind: 'approval', id: 'r9', resolved: { decision: 'approved' } });
  });
});
