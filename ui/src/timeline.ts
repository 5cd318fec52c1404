// Folds a task's normalized events (berth_domain::TaskEvent) into timeline items for display.
// - message_delta fragments accumulate into one streaming assistant item; the following
//   `message` replaces the accumulated text (never shown twice);
// - tool_result joins its tool_call (same call_id), approval_resolved its approval_request (same id);
// - events are deduplicated by seq (a replay after a reconnect or reload adds nothing).

import type { TaskEvent } from './api';

/** Task states in which a tool call may still be running (`waiting`: paused for approval). */
const RUNNING = new Set(['queued', 'starting', 'running', 'waiting']);
/** Most streamed output kept per running tool card (its newest part). */
const LIVE_MAX = 64 * 1024;

export type Item =
  | { kind: 'user'; key: string; seq: number; at: string; text: string }
  | { kind: 'assistant'; key: string; seq: number; at: string; text: string; streaming: boolean }
  | { kind: 'reasoning'; key: string; seq: number; at: string; text: string }
  | {
      kind: 'tool';
      key: string;
      seq: number;
      at: string;
      callId: string;
      name: string;
      input: unknown;
      result?: { output: string; exitCode?: number; isError: boolean; seq: number; at: string };
      /** The turn ended (or the task stopped) before a result came: no longer running. */
      ended?: string;
      /** When it ended so (the event that ended it). */
      endedAt?: string;
      /** Output streamed while it runs (`tool_output` fragments; the result has the whole). */
      live?: string;
    }
  | { kind: 'file_change'; key: string; seq: number; at: string; path: string; change: string }
  | { kind: 'error'; key: string; seq: number; at: string; message: string }
  | {
      kind: 'usage';
      key: string;
      seq: number;
      at: string;
      input: number;
      output: number;
      cached: number;
      cost?: number;
    }
  | { kind: 'status'; key: string; seq: number; at: string; state: string; reason?: string }
  | { kind: 'session'; key: string; seq: number; at: string; sessionId: string; model?: string }
  | { kind: 'turn_completed'; key: string; seq: number; at: string; result?: string }
  | { kind: 'turn_interrupted'; key: string; seq: number; at: string; by?: string; newConversation: boolean }
  | { kind: 'log'; key: string; seq: number; at: string; line: string }
  | {
      kind: 'approval';
      key: string;
      seq: number;
      at: string;
      id: string;
      request: Record<string, unknown>;
      resolved?: { decision: string; by?: string; reason?: string; seq: number };
    }
  | { kind: 'raw'; key: string; seq: number; at: string; data: unknown };

/** The event type an item stands for (rendered as data-type). */
export function itemType(it: Item): string {
  switch (it.kind) {
    case 'user':
      return 'user_message';
    case 'assistant':
      return it.streaming ? 'message_delta' : 'message';
    case 'tool':
      return 'tool_call';
    case 'approval':
      return 'approval_request';
    default:
      return it.kind;
  }
}

export const DETAIL_KINDS = new Set(['log', 'raw']);

export class Timeline {
  items: Item[] = [];
  lastSeq = 0;
  /** Index of the assistant item receiving deltas, if any. */
  private open = -1;
  private tools = new Map<string, number>();
  private approvals = new Map<string, number>();
  state: string | undefined;
  reason: string | undefined;
  usage = { input: 0, output: 0, cached: 0, cost: undefined as number | undefined };

  /** Applies one event; returns false when it was a duplicate (seq already seen). */
  apply(ev: TaskEvent): boolean {
    if (typeof ev.seq === 'number' && ev.seq <= this.lastSeq) return false;
    this.lastSeq = ev.seq;
    const base = { key: String(ev.seq), seq: ev.seq, at: ev.at };
    const s = (k: string) => (typeof ev[k] === 'string' ? (ev[k] as string) : '');
    switch (ev.type) {
      case 'user_message':
        this.open = -1;
        this.push({ ...base, kind: 'user', text: s('text') });
        break;
      case 'message_delta': {
        const cur = this.items[this.open];
        if (cur && cur.kind === 'assistant' && cur.streaming) {
          this.items[this.open] = { ...cur, text: cur.text + s('text') };
        } else {
          this.push({ ...base, kind: 'assistant', text: s('text'), streaming: true });
          this.open = this.items.length - 1;
        }
        break;
      }
      case 'message': {
        const cur = this.items[this.open];
        if (cur && cur.kind === 'assistant' && cur.streaming) {
          this.items[this.open] = { ...cur, text: s('text'), streaming: false, seq: ev.seq };
        } else {
          this.push({ ...base, kind: 'assistant', text: s('text'), streaming: false });
        }
        this.open = -1;
        break;
      }
      case 'reasoning':
        this.push({ ...base, kind: 'reasoning', text: s('text') });
        break;
      case 'tool_call':
        this.push({ ...base, kind: 'tool', callId: s('call_id'), name: s('name'), input: ev.input });
        this.tools.set(s('call_id'), this.items.length - 1);
        break;
      case 'tool_output': {
        const idx = this.tools.get(s('call_id'));
        const cur = idx === undefined ? undefined : this.items[idx];
        if (idx !== undefined && cur && cur.kind === 'tool' && !cur.result) {
          const live = (cur.live ?? '') + s('text');
          // Keep the newest part of a long stream.
          this.items[idx] = { ...cur, live: live.length > LIVE_MAX ? live.slice(live.length - LIVE_MAX) : live };
        }
        break;
      }
      case 'tool_result': {
        const result = {
          output: s('output'),
          exitCode: typeof ev.exit_code === 'number' ? (ev.exit_code as number) : undefined,
          isError: ev.is_error === true,
          seq: ev.seq,
          at: ev.at,
        };
        const idx = this.tools.get(s('call_id'));
        const cur = idx === undefined ? undefined : this.items[idx];
        if (idx !== undefined && cur && cur.kind === 'tool') {
          this.items[idx] = { ...cur, result };
        } else {
          this.push({ ...base, kind: 'tool', callId: s('call_id'), name: '(unknown tool)', input: undefined, result });
        }
        break;
      }
      case 'file_change':
        this.push({ ...base, kind: 'file_change', path: s('path'), change: s('change') });
        break;
      case 'error':
        this.push({ ...base, kind: 'error', message: s('message') });
        break;
      case 'usage': {
        const n = (k: string) => (typeof ev[k] === 'number' ? (ev[k] as number) : 0);
        const cost = typeof ev.cost_usd === 'number' ? (ev.cost_usd as number) : undefined;
        this.usage.input += n('input_tokens');
        this.usage.output += n('output_tokens');
        this.usage.cached += n('cached_input_tokens');
        if (cost !== undefined) this.usage.cost = (this.usage.cost ?? 0) + cost;
        this.push({ ...base, kind: 'usage', input: n('input_tokens'), output: n('output_tokens'), cached: n('cached_input_tokens'), cost });
        break;
      }
      case 'status':
        if (!RUNNING.has(s('state'))) this.endOpenTools(s('state'), ev.at);
        this.state = s('state');
        this.reason = s('reason') || undefined;
        this.push({ ...base, kind: 'status', state: s('state'), reason: s('reason') || undefined });
        break;
      case 'session':
        this.push({ ...base, kind: 'session', sessionId: s('agent_session_id'), model: s('model') || undefined });
        break;
      case 'turn_completed':
        this.endOpenTools('turn ended', ev.at);
        this.open = -1;
        this.push({ ...base, kind: 'turn_completed', result: s('result') || undefined });
        break;
      case 'turn_interrupted':
        this.endOpenTools('interrupted', ev.at);
        this.open = -1;
        this.push({ ...base, kind: 'turn_interrupted', by: s('by') || undefined, newConversation: ev.new_conversation === true });
        break;
      case 'log':
        this.push({ ...base, kind: 'log', line: s('line') });
        break;
      case 'approval_request': {
        const { seq: _s, at: _a, type: _t, ...request } = ev;
        this.push({ ...base, kind: 'approval', id: s('id'), request });
        this.approvals.set(s('id'), this.items.length - 1);
        break;
      }
      case 'approval_resolved': {
        const resolved = { decision: s('decision'), by: s('by') || undefined, reason: s('reason') || undefined, seq: ev.seq };
        const idx = this.approvals.get(s('id'));
        const cur = idx === undefined ? undefined : this.items[idx];
        if (idx !== undefined && cur && cur.kind === 'approval') this.items[idx] = { ...cur, resolved };
        else this.push({ ...base, kind: 'approval', id: s('id'), request: {}, resolved });
        break;
      }
      default:
        this.push({ ...base, kind: 'raw', data: ev.type === 'raw' ? ev.data : ev });
    }
    return true;
  }

  /** Tool calls still waiting for a result when their turn or task ends are not running any more. */
  private endOpenTools(why: string, at: string) {
    for (const idx of this.tools.values()) {
      const cur = this.items[idx];
      if (cur && cur.kind === 'tool' && !cur.result && !cur.ended) this.items[idx] = { ...cur, ended: why, endedAt: at };
    }
  }

  private push(it: Item) {
    this.items.push(it);
  }
}

/** How long a tool call took (or has taken by `now`): from its call to its result, or to the
 * end of its turn or task; `undefined` when a timestamp does not parse. */
export function toolElapsedMs(it: { at: string; result?: { at: string }; endedAt?: string }, now: number): number | undefined {
  const from = Date.parse(it.at);
  const to = it.result ? Date.parse(it.result.at) : it.endedAt ? Date.parse(it.endedAt) : now;
  if (Number.isNaN(from) || Number.isNaN(to)) return undefined;
  return Math.max(0, to - from);
}

/** `850 ms`, `12 s`, `3 min 05 s`, `1 h 02 min`. */
export function formatElapsed(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/** Splits text for display: the first `max` characters, and whether more exists. */
export function truncate(text: string, max = 2000): { head: string; more: number } {
  if (text.length <= max) return { head: text, more: 0 };
  return { head: text.slice(0, max), more: text.length - max };
}

/** Classifies one line of a unified diff for colouring. */
export function diffLineClass(line: string): 'add' | 'del' | 'hunk' | 'meta' | '' {
  if (line.startsWith('+++') || line.startsWith('---')) return 'meta';
  if (line.startsWith('diff ') || line.startsWith('index ') || line.startsWith('new file') || line.startsWith('deleted file')) return 'meta';
  if (line.startsWith('@@')) return 'hunk';
  if (line.startsWith('+')) return 'add';
  if (line.startsWith('-')) return 'del';
  return '';
}
