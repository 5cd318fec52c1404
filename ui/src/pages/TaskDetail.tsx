import { memo, useEffect, useLayoutEffect, useRef, useState, type FormEvent } from 'react';
import { api, getToken, post, type Task, type TaskDiff, type TaskEvent } from '../api';
import { dateTime, num, usd } from '../format';
import { navigate, useLoad } from '../hooks';
import { followSse } from '../sse';
import { DETAIL_KINDS, diffLineClass, itemType, Timeline, truncate, type Item } from '../timeline';
import { Dialog, Empty, ErrorBox, Loading, StateBadge } from '../ui';

const FINAL = new Set(['failed', 'cancelled']);

export function TaskDetail({ id, tab }: { id: string; tab: string }) {
  const enc = encodeURIComponent(id);
  const task = useLoad(() => api<Task>(`/tasks/${enc}`), [enc], 3000);
  const [items, setItems] = useState<Item[]>([]);
  const [streamStatus, setStreamStatus] = useState<{ state: string; reason?: string; seq: number }>();
  const [conn, setConn] = useState<string>('connecting');
  const [showDetails, setShowDetails] = useState(false);
  const [liveUsage, setLiveUsage] = useState<Timeline['usage']>();
  const stateRef = useRef<string | undefined>(undefined);
  const reload = useRef(task.reload);
  reload.current = task.reload;

  useEffect(() => {
    const tl = new Timeline();
    setItems([]);
    setStreamStatus(undefined);
    let frame = 0;
    const flush = () => {
      frame = 0;
      setItems(tl.items.slice());
      setLiveUsage({ ...tl.usage });
    };
    const stop = followSse({
      url: (after) => `/api/v1/tasks/${enc}/events/stream?after=${after}`,
      token: getToken(),
      onStatus: (s, detail) => setConn(detail ? `${s}: ${detail}` : s),
      reconnectOnEnd: () => !FINAL.has(stateRef.current ?? ''),
      onMessage: (msg) => {
        let ev: TaskEvent;
        try {
          ev = JSON.parse(msg.data);
        } catch {
          return;
        }
        if (!tl.apply(ev)) return;
        if (ev.type === 'status') {
          stateRef.current = String(ev.state);
          setStreamStatus({ state: String(ev.state), reason: (ev.reason as string) || undefined, seq: ev.seq });
          reload.current();
        }
        if (!frame) frame = requestAnimationFrame(flush);
      },
    });
    return () => {
      stop();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [enc]);

  const t = task.data;
  const state = streamStatus && (!t || streamStatus.seq > t.last_seq) ? streamStatus.state : t?.state;
  const reason = streamStatus && (!t || streamStatus.seq > t.last_seq) ? streamStatus.reason : t?.reason;
  useEffect(() => {
    if (state) stateRef.current = state;
  }, [state]);

  if (task.loading && !t) return <Loading what="Loading task" />;
  if (!t) return <ErrorBox error={task.error ?? 'not found'} onRetry={task.reload} />;

  const usage = t.usage;
  const inTok = Math.max(usage.input_tokens, liveUsage?.input ?? 0);
  const outTok = Math.max(usage.output_tokens, liveUsage?.output ?? 0);
  const cost = usage.cost_usd ?? liveUsage?.cost;
  const visible = showDetails ? items : items.filter((i) => !DETAIL_KINDS.has(i.kind));
  const hidden = items.length - visible.length;

  return (
    <section aria-labelledby="task-title" className="task-page">
      <p className="crumbs">
        <a href="#/tasks">Tasks</a> / <a href={`#/workspaces/${encodeURIComponent(t.workspace)}`}>{t.workspace}</a> /
      </p>
      <div className="page-head">
        <h1 id="task-title" className="task-title">
          {t.prompt.length > 120 ? `${t.prompt.slice(0, 120)}…` : t.prompt}
        </h1>
      </div>
      <dl className="facts" data-testid="task-header">
        <div><dt>State</dt><dd><StateBadge state={state ?? t.state} testid="task-state" /></dd></div>
        <div><dt>Agent</dt><dd data-testid="task-agent">{t.agent}{t.model ? ` · ${t.model}` : ''}</dd></div>
        <div><dt>Workspace</dt><dd>{t.workspace}</dd></div>
        <div><dt>Tokens in/out</dt><dd data-testid="task-tokens">{num(inTok)} / {num(outTok)}{usage.cached_input_tokens ? <span className="muted small"> · {num(usage.cached_input_tokens)} cached</span> : null}</dd></div>
        <div><dt>Cost</dt><dd>{usd(cost)}</dd></div>
        <div><dt>Directory</dt><dd className="mono small">{t.dir}{t.worktree ? ` (worktree ${t.worktree})` : ''}</dd></div>
        <div><dt>Created</dt><dd>{dateTime(t.created_at)}</dd></div>
        {reason && <div className="wide"><dt>Reason</dt><dd className="failure" data-testid="task-reason">{reason}</dd></div>}
      </dl>
      <div className="row">
        <CancelButton id={enc} state={state ?? t.state} onDone={task.reload} />
      </div>
      <div className="tabs" role="tablist" aria-label="Task views">
        <button type="button" role="tab" aria-selected={tab !== 'diff'} className="tab" onClick={() => navigate(`/tasks/${enc}`)} data-testid="task-tab-timeline">
          Timeline
        </button>
        <button type="button" role="tab" aria-selected={tab === 'diff'} className="tab" onClick={() => navigate(`/tasks/${enc}?tab=diff`)} data-testid="task-tab-diff">
          Diff
        </button>
      </div>
      {tab === 'diff' ? (
        <DiffView id={enc} />
      ) : (
        <div role="tabpanel" aria-label="Timeline">
          <div className="row timeline-tools">
            <label className="check small">
              <input type="checkbox" checked={showDetails} onChange={(e) => setShowDetails(e.target.checked)} data-testid="task-details-toggle" />
              Show details (agent logs and raw events{hidden ? `: ${hidden} hidden` : ''})
            </label>
            <span className="muted small" data-testid="task-stream-status" aria-live="polite">
              {conn === 'open' ? 'live' : conn}
            </span>
          </div>
          <TimelineView items={visible} />
          <FollowUp id={enc} state={state ?? t.state} onSent={task.reload} />
        </div>
      )}
    </section>
  );
}

function CancelButton({ id, state, onDone }: { id: string; state: string; onDone: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const [confirm, setConfirm] = useState(false);
  const can = !FINAL.has(state);
  const cancel = async () => {
    setConfirm(false);
    setBusy(true);
    setError(undefined);
    try {
      await post(`/tasks/${id}/cancel`);
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
      onDone();
    }
  };
  return (
    <>
      <button type="button" className="btn danger" disabled={!can || busy} onClick={() => setConfirm(true)} data-testid="task-cancel">
        {busy ? 'Cancelling…' : 'Cancel task'}
      </button>
      <Dialog open={confirm} title="Cancel this task?" onClose={() => setConfirm(false)}>
        <p>The agent is stopped (its whole process group); no more messages can be sent.</p>
        <div className="row">
          <button type="button" className="btn" onClick={() => setConfirm(false)}>Keep running</button>
          <button type="button" className="btn danger" onClick={cancel} data-testid="task-cancel-confirm">Cancel task</button>
        </div>
      </Dialog>
      {error && <span className="error-box small" role="alert">{error}</span>}
    </>
  );
}

function TimelineView({ items }: { items: Item[] }) {
  const end = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  useEffect(() => {
    const on = () => {
      const doc = document.documentElement;
      stick.current = window.innerHeight + window.scrollY >= doc.scrollHeight - 120;
    };
    window.addEventListener('scroll', on, { passive: true });
    return () => window.removeEventListener('scroll', on);
  }, []);
  useLayoutEffect(() => {
    if (stick.current && items.length) end.current?.scrollIntoView({ block: 'end' });
  }, [items]);
  if (items.length === 0) return <Empty>No events yet — waiting for the agent…</Empty>;
  return (
    <ol className="timeline" data-testid="task-timeline" aria-live="polite" aria-relevant="additions">
      {items.map((it) => (
        <EventItem key={it.key} it={it} />
      ))}
      <div ref={end} />
    </ol>
  );
}

const EventItem = memo(function EventItem({ it }: { it: Item }) {
  const type = itemType(it);
  const common = { 'data-testid': 'task-event', 'data-type': type, 'data-seq': it.seq, className: `ev ev-${it.kind}` };
  switch (it.kind) {
    case 'user':
      return (
        <li {...common}>
          <div className="ev-label">You</div>
          <div className="bubble user-bubble pre-wrap">{it.text}</div>
        </li>
      );
    case 'assistant':
      return (
        <li {...common}>
          <div className="ev-label">Agent{it.streaming && <span className="muted"> · typing…</span>}</div>
          <div className="bubble pre-wrap">{it.text}</div>
        </li>
      );
    case 'reasoning':
      return (
        <li {...common}>
          <details>
            <summary>Reasoning <span className="muted">· {firstLine(it.text, 80)}</span></summary>
            <div className="pre-wrap dim">{it.text}</div>
          </details>
        </li>
      );
    case 'tool':
      return (
        <li {...common} data-call-id={it.callId}>
          <details open={!it.result || it.result.isError}>
            <summary>
              <span className="tool-name">{it.name}</span> <code className="tool-summary">{toolSummary(it.input)}</code>
              {it.result ? (
                <span className={`badge ${it.result.isError ? 'state-failed' : 'state-completed'}`} data-testid="tool-result" data-type="tool_result">
                  {it.result.isError ? 'error' : 'ok'}
                  {it.result.exitCode !== undefined ? ` · exit ${it.result.exitCode}` : ''}
                </span>
              ) : (
                <span className="badge state-running">running</span>
              )}
            </summary>
            {it.input !== undefined && <LongText text={typeof it.input === 'string' ? it.input : JSON.stringify(it.input, null, 2)} label="input" />}
            {it.result && <LongText text={it.result.output || '(no output)'} label="output" error={it.result.isError} />}
          </details>
        </li>
      );
    case 'file_change':
      return (
        <li {...common}>
          <span className={`badge change-${it.change}`}>{it.change}</span> <code>{it.path}</code>
        </li>
      );
    case 'error':
      return (
        <li {...common} role="alert">
          <div className="error-box">Error: {it.message}</div>
        </li>
      );
    case 'usage':
      return (
        <li {...common} className={`${common.className} meta`}>
          tokens: {num(it.input)} in · {num(it.output)} out{it.cached ? ` · ${num(it.cached)} cached` : ''}
          {it.cost !== undefined ? ` · ${usd(it.cost)}` : ''}
        </li>
      );
    case 'status':
      return (
        <li {...common} className={`${common.className} meta`}>
          → <StateBadge state={it.state} />
          {it.reason && <span className="failure"> {it.reason}</span>}
        </li>
      );
    case 'session':
      return (
        <li {...common} className={`${common.className} meta`}>
          agent session <code>{it.sessionId}</code>
          {it.model && <> · model {it.model}</>}
        </li>
      );
    case 'turn_completed':
      return (
        <li {...common} className={`${common.className} meta`}>
          turn completed
        </li>
      );
    case 'log':
      return (
        <li {...common} className={`${common.className} meta mono dim`}>
          {it.line}
        </li>
      );
    case 'raw':
      return (
        <li {...common} className={`${common.className} meta`}>
          <LongText text={JSON.stringify(it.data)} label="raw event" />
        </li>
      );
  }
});

function LongText({ text, label, error, max = 1500 }: { text: string; label: string; error?: boolean; max?: number }) {
  const [all, setAll] = useState(false);
  const { head, more } = truncate(text, max);
  return (
    <div className="long">
      <pre className={error ? 'out error-out' : 'out'} aria-label={label}>
        {all ? text : head}
        {!all && more > 0 && '…'}
      </pre>
      {more > 0 && (
        <button type="button" className="btn small link" onClick={() => setAll(!all)} aria-expanded={all} data-testid="show-all">
          {all ? 'Show less' : `Show all (${more.toLocaleString('en-US')} more characters)`}
        </button>
      )}
    </div>
  );
}

function firstLine(s: string, n: number) {
  const l = s.split('\n')[0];
  return l.length > n ? `${l.slice(0, n)}…` : l;
}

function toolSummary(input: unknown): string {
  if (input && typeof input === 'object') {
    const o = input as Record<string, unknown>;
    for (const k of ['command', 'cmd', 'file_path', 'path', 'pattern', 'url', 'description']) {
      const v = o[k];
      if (typeof v === 'string') return firstLine(v, 100);
      if (Array.isArray(v)) return firstLine(v.join(' '), 100);
    }
    return firstLine(JSON.stringify(input), 100);
  }
  return typeof input === 'string' ? firstLine(input, 100) : '';
}

function FollowUp({ id, state, onSent }: { id: string; state: string; onSent: () => void }) {
  const [text, setText] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const enabled = state === 'completed' || state === 'waiting' || state === 'interrupted';
  const send = async (e?: FormEvent) => {
    e?.preventDefault();
    if (!text.trim() || !enabled) return;
    setBusy(true);
    setError(undefined);
    try {
      await post(`/tasks/${id}/messages`, { text });
      setText('');
      onSent();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="followup card" onSubmit={send} aria-label="Follow-up message">
      <label htmlFor="followup">Follow-up</label>
      <textarea
        id="followup"
        rows={3}
        value={text}
        onChange={(e) => setText(e.target.value)}
        disabled={!enabled || busy}
        placeholder={enabled ? 'Next message in the same conversation (Ctrl+Enter to send)' : FINAL.has(state) ? `The task is ${state}: no more messages.` : 'Available when the agent has finished its turn.'}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) void send();
        }}
        data-testid="followup-input"
      />
      <ErrorBox error={error} />
      <div className="row">
        <button type="submit" className="btn primary" disabled={!enabled || busy || !text.trim()} data-testid="followup-send">
          {busy ? 'Sending…' : 'Send'}
        </button>
      </div>
    </form>
  );
}

function DiffView({ id }: { id: string }) {
  const d = useLoad(() => api<TaskDiff>(`/tasks/${id}/diff`), [id]);
  return (
    <div role="tabpanel" aria-label="Diff" data-testid="task-diff">
      <div className="row">
        <button type="button" className="btn small" onClick={d.reload}>
          Refresh
        </button>
      </div>
      <ErrorBox error={d.error} onRetry={d.reload} />
      {d.loading && !d.data ? (
        <Loading what="Loading diff" />
      ) : d.data && !d.data.diff.trim() ? (
        <Empty>
          <span data-testid="diff-empty">no changes</span>
          {d.data.git === false && <span className="muted small"> ({d.data.dir ?? 'the directory'} is not a git repository)</span>}
        </Empty>
      ) : d.data ? (
        <>
        {d.data.truncated && <p className="warn small">The diff is truncated.</p>}
        <pre className="diff" data-testid="diff-text">
          {d.data.diff.split('\n').map((l, i) => (
            <span key={i} className={`dl ${diffLineClass(l)}`}>
              {l}
              {'\n'}
            </span>
          ))}
        </pre>
        </>
      ) : null}
    </div>
  );
}
