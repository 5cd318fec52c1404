import { memo, useEffect, useLayoutEffect, useRef, useState, type FormEvent } from 'react';
import { api, apiFetch, getToken, post, type Approval, type CreatePullRequestRequest, type PushTaskRequest, type Session, type Task, type TaskDiff, type TaskEvent, type TaskPush } from '../api';
import { ApprovalCard } from './Inbox';
import { dateTime, httpUrl, num, usd, usdExact } from '../format';
import { navigate, useAction, useLoad } from '../hooks';
import { canContinueInteractively, terminalRoute } from '../agentSessions';
import { canDeliver, canOpenPullRequest, openPullRequest, pullRequestRequest, pushBeforePullRequest, pushRequest } from '../deliver';
import { followSse } from '../sse';
import { DETAIL_KINDS, diffLineClass, formatElapsed, itemType, Timeline, toolElapsedMs, truncate, type Item } from '../timeline';
import { Dialog, Empty, ErrorBox, Loading, StateBadge } from '../ui';
import { Allowed } from '../roles';

const FINAL = new Set(['failed', 'cancelled']);

export function TaskDetail({ id, tab }: { id: string; tab: string }) {
  const enc = encodeURIComponent(id);
  const task = useLoad(() => api<Task>(`/tasks/${enc}`), [enc], 3000);
  const pending = useLoad(() => api<Approval[]>(`/tasks/${enc}/approvals?pending=true`), [enc], 3000);
  const reloadPending = useRef(pending.reload);
  reloadPending.current = pending.reload;
  const [items, setItems] = useState<Item[]>([]);
  const [streamStatus, setStreamStatus] = useState<{ state: string; reason?: string; seq: number }>();
  const [conn, setConn] = useState<string>('connecting');
  const [showDetails, setShowDetails] = useState(false);
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
        if (ev.type === 'approval_request' || ev.type === 'approval_resolved') reloadPending.current();
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

  // The gateway's record of the task's calls (the task is re-read every 3 s, so this grows
  // during a turn); what the agent reports of itself is only in the timeline.
  const usage = t.usage;
  const inTok = usage.input_tokens;
  const outTok = usage.output_tokens;
  const visible = showDetails ? items : items.filter((i) => !DETAIL_KINDS.has(i.kind));
  const hidden = items.length - visible.length;

  return (
    <section aria-labelledby="task-title" className="task-page">
      <p className="crumbs">
        <a href="#/tasks">Tasks</a> / {t.workspace_removed
          ? <span className="muted">{t.workspace} (removed)</span>
          : <a href={`#/workspaces/${encodeURIComponent(t.workspace)}`}>{t.workspace}</a>} /
      </p>
      <div className="page-head">
        <h1 id="task-title" className="task-title">
          {t.prompt.length > 120 ? `${t.prompt.slice(0, 120)}…` : t.prompt}
        </h1>
      </div>
      <dl className="facts" data-testid="task-header">
        <div><dt>State</dt><dd><StateBadge state={state ?? t.state} testid="task-state" /></dd></div>
        <div><dt>Agent</dt><dd data-testid="task-agent">{t.agent}{t.model ? ` · ${t.model}` : ''}</dd></div>
        <div><dt>Workspace</dt><dd>{t.workspace}{t.workspace_removed ? ' (removed)' : ''}</dd></div>
        <div><dt>Tokens in/out</dt><dd data-testid="task-tokens">{num(inTok)} / {num(outTok)}{usage.cached_input_tokens ? <span className="muted small"> · {num(usage.cached_input_tokens)} cached</span> : null}</dd></div>
        <div><dt>Cost</dt><dd data-testid="task-cost">{usage.cost ? usdExact(usage.cost, usage.fallback_calls) : usd(usage.cost_usd)}</dd></div>
        {t.approval && t.approval !== 'never' && <div><dt>Approval</dt><dd data-testid="task-approval">{t.approval}</dd></div>}
        <div><dt>Directory</dt><dd className="mono small">{t.dir}{t.worktree ? ` (worktree ${t.worktree})` : ''}</dd></div>
        <div><dt>Created</dt><dd>{dateTime(t.created_at)}</dd></div>
        {t.push && <div><dt>Pushed</dt><dd className="mono small" data-testid="task-push">{t.push.remote}/{t.push.branch} @ {t.push.commit.slice(0, 12)}</dd></div>}
        {t.pull_request && <div><dt>Pull request</dt><dd data-testid="task-pr">{httpUrl(t.pull_request.url)
          ? <a href={httpUrl(t.pull_request.url)} target="_blank" rel="noreferrer noopener">{t.pull_request.provider} #{t.pull_request.number}</a>
          : `${t.pull_request.provider} #${t.pull_request.number}`}</dd></div>}
        {reason && <div className="wide"><dt>Reason</dt><dd className="failure" data-testid="task-reason">{reason}</dd></div>}
      </dl>
      <div className="row">
        <Allowed need="operate">
          <CancelButton id={enc} state={state ?? t.state} onDone={task.reload} />
          <ContinueButton id={enc} task={{ ...t, state: state ?? t.state }} />
          <DeliverButtons id={enc} task={t} state={state ?? t.state} onDone={task.reload} />
        </Allowed>
      </div>
      {(pending.data ?? []).length > 0 && (
        <div className="approvals" data-testid="task-approvals" aria-label="Waiting for a decision">
          <h2 className="small">Waiting for a decision</h2>
          {(pending.data ?? []).map((a) => (
            <ApprovalCard key={a.id} a={a} onDecided={() => { pending.reload(); task.reload(); }} />
          ))}
        </div>
      )}
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
          <Allowed need="operate">
            <FollowUp id={enc} state={state ?? t.state} onSent={task.reload} />
          </Allowed>
        </div>
      )}
    </section>
  );
}

/** “Continue interactively”: takes the task over in its agent's TUI and opens the terminal. */
function ContinueButton({ id, task }: { id: string; task: Task }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  if (!canContinueInteractively(task)) return null;
  const go = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const sess = await post<Session>(`/tasks/${id}/attach`, {});
      navigate(terminalRoute(encodeURIComponent(task.workspace), sess));
    } catch (e) {
      setError((e as Error).message);
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" className="btn" disabled={busy} onClick={go} data-testid="task-continue-interactive">
        {busy ? 'Opening…' : 'Continue interactively'}
      </button>
      <ErrorBox error={error} />
    </>
  );
}

/** “Push” and “Open pull request”: `berth task push|pr` from the task page. The server does the
 * work (git inside the workspace with its scoped credential; the provider's API with the vault's
 * token) and says why not when it cannot (no repository, nothing to push, no credential). */
function DeliverButtons({ id, task, state, onDone }: { id: string; task: Task; state: string; onDone: () => void }) {
  const [open, setOpen] = useState<'push' | 'pr' | null>(null);
  const { busy, error, run } = useAction();
  const [result, setResult] = useState<string>();
  const [branch, setBranch] = useState('');
  const [title, setTitle] = useState('');
  const [base, setBase] = useState('');
  const [draft, setDraft] = useState(false);
  const [pushFirst, setPushFirst] = useState(true);
  if (!canDeliver(task, state)) return null;
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const which = open;
    setOpen(null);
    setResult(undefined);
    await run(async () => {
      if (which === 'push') {
        const body: PushTaskRequest = pushRequest(branch);
        const p = await post<TaskPush>(`/tasks/${id}/push`, body);
        setResult(`Pushed ${p.commit.slice(0, 12)} to ${p.remote}/${p.branch}`);
      } else {
        const body: CreatePullRequestRequest = pullRequestRequest(title, base, draft);
        const { push, pr } = await openPullRequest(post, id, body, pushFirst ? pushBeforePullRequest(task) : null);
        const pushed = push ? `pushed ${push.commit.slice(0, 12)} to ${push.remote}/${push.branch}, ` : '';
        setResult(`${pushed}opened ${pr.provider} #${pr.number}`.replace(/^./, (c) => c.toUpperCase()));
      }
    });
    onDone();
  };
  return (
    <>
      <button type="button" className="btn" disabled={busy} onClick={() => setOpen('push')} data-testid="task-push-open">
        {busy ? 'Working…' : 'Push'}
      </button>
      {canOpenPullRequest(task, state) && (
        <button type="button" className="btn" disabled={busy} onClick={() => setOpen('pr')} data-testid="task-pr-open">
          Open pull request
        </button>
      )}
      <Dialog open={open === 'push'} title="Push the task's branch" onClose={() => setOpen(null)} testid="task-push-dialog">
        <form onSubmit={submit}>
          <p className="small">git pushes the task's commits from inside the workspace, through its egress rules, with the credential bound to the workspace for the remote's host.</p>
          <label>
            Branch on the remote <span className="muted small">(empty: the task's branch)</span>
            <input value={branch} onChange={(e) => setBranch(e.target.value)} maxLength={100} placeholder="fix-42" data-testid="task-push-branch" />
          </label>
          <div className="row">
            <button type="button" className="btn" onClick={() => setOpen(null)}>Cancel</button>
            <button type="submit" className="btn primary" data-testid="task-push-confirm">Push</button>
          </div>
        </form>
      </Dialog>
      <Dialog open={open === 'pr'} title="Open a pull request" onClose={() => setOpen(null)} testid="task-pr-dialog">
        <form onSubmit={submit}>
          <p className="small">The provider must have the branch: push it first, here or with Push. The description is the task's summary.</p>
          <label>
            Title <span className="muted small">(empty: the prompt's first line)</span>
            <input value={title} onChange={(e) => setTitle(e.target.value)} maxLength={256} data-testid="task-pr-title" />
          </label>
          <label>
            Base branch <span className="muted small">(empty: the remote's default)</span>
            <input value={base} onChange={(e) => setBase(e.target.value)} maxLength={100} placeholder="main" data-testid="task-pr-base" />
          </label>
          <label className="check">
            <input type="checkbox" checked={draft} onChange={(e) => setDraft(e.target.checked)} data-testid="task-pr-draft" />
            Draft
          </label>
          <label className="check">
            <input type="checkbox" checked={pushFirst} onChange={(e) => setPushFirst(e.target.checked)} data-testid="task-pr-push" />
            Push first (to origin/{task.push?.remote === 'origin' ? task.push.branch : "the task's branch"})
          </label>
          <div className="row">
            <button type="button" className="btn" onClick={() => setOpen(null)}>Cancel</button>
            <button type="submit" className="btn primary" data-testid="task-pr-confirm">Open pull request</button>
          </div>
        </form>
      </Dialog>
      {result && <span className="small" role="status" data-testid="task-deliver-result">{result}</span>}
      {error && <span className="error-box small" role="alert" data-testid="task-deliver-error">{error}</span>}
    </>
  );
}

function CancelButton({ id, state, onDone }: { id: string; state: string; onDone: () => void }) {
  const { busy, error, run } = useAction();
  const [confirm, setConfirm] = useState(false);
  const can = !FINAL.has(state);
  const cancel = async () => {
    setConfirm(false);
    await run(async () => {
      await post(`/tasks/${id}/cancel`);
    });
    onDone();
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
          <details open={(!it.result && !it.ended) || it.result?.isError}>
            <summary>
              <span className="tool-name">{it.name}</span> <code className="tool-summary">{toolSummary(it.input)}</code>{' '}
              <ToolElapsed it={it} />
              {it.result ? (
                <span className={`badge ${it.result.isError ? 'state-failed' : 'state-completed'}`} data-testid="tool-result" data-type="tool_result">
                  {it.result.isError ? 'error' : 'ok'}
                  {it.result.exitCode !== undefined ? ` · exit ${it.result.exitCode}` : ''}
                </span>
              ) : it.ended ? (
                <span className="badge state-stopped" data-testid="tool-ended" title="the turn ended before the tool reported a result">
                  no result · {it.ended}
                </span>
              ) : (
                <span className="badge state-running">running</span>
              )}
            </summary>
            {it.input !== undefined && <LongText text={typeof it.input === 'string' ? it.input : JSON.stringify(it.input, null, 2)} label="input" />}
            {!it.result && it.live && <LongText text={it.live} label="output so far" />}
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
    case 'turn_interrupted':
      return (
        <li {...common} className={`${common.className} meta`}>
          turn interrupted{it.by && <span className="muted"> by {it.by}</span>}
          {it.newConversation && <span className="warn"> · the agent had no session to resume yet: a new conversation starts with the original prompt and the new message</span>}
        </li>
      );
    case 'log':
      return (
        <li {...common} className={`${common.className} meta mono dim`}>
          {it.line}
        </li>
      );
    case 'approval': {
      const r = it.request as { summary?: string; kind?: string; risks?: string[] };
      return (
        <li {...common} className={`${common.className} meta`} data-request={it.id}>
          asks permission: <code>{r.summary ?? it.id}</code>
          {r.risks && r.risks.length > 0 && <span className="warn"> · risks: {r.risks.join(', ')}</span>}
          {it.resolved ? (
            <span data-testid="approval-outcome">
              {' '}→ <span className={`badge ${it.resolved.decision === 'approved' ? 'state-completed' : 'state-failed'}`}>{it.resolved.decision}</span>
              {it.resolved.by && <span className="muted"> by {it.resolved.by}</span>}
              {it.resolved.reason && <span className="muted">: {it.resolved.reason}</span>}
            </span>
          ) : (
            <span className="badge state-waiting"> pending</span>
          )}
        </li>
      );
    }
    case 'raw':
      return (
        <li {...common} className={`${common.className} meta`}>
          <LongText text={JSON.stringify(it.data)} label="raw event" />
        </li>
      );
  }
});

/** How long a tool call took, ticking each second while it runs; it stops when the call's
 * result comes or its turn or task ends. */
function ToolElapsed({ it }: { it: Extract<Item, { kind: 'tool' }> }) {
  const running = !it.result && !it.ended;
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!running) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [running]);
  const ms = toolElapsedMs(it, now);
  if (ms === undefined) return null;
  return (
    <span className="muted small tool-elapsed" data-testid="tool-elapsed" title={running ? 'running for' : 'took'}>
      {formatElapsed(ms)}
    </span>
  );
}

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
  // A turn in flight takes a message only as a redirect: it is stopped, and the message starts
  // the next turn of the same conversation.
  const inFlight = state === 'starting' || state === 'running' || state === 'waiting';
  const enabled = state === 'completed' || state === 'interrupted' || inFlight;
  const send = async (e?: FormEvent) => {
    e?.preventDefault();
    if (!text.trim() || !enabled) return;
    setBusy(true);
    setError(undefined);
    try {
      await post(`/tasks/${id}/messages`, inFlight ? { text, interrupt: true } : { text });
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
      <label htmlFor="followup">{inFlight ? 'Redirect the running turn' : 'Follow-up'}</label>
      <textarea
        id="followup"
        rows={3}
        value={text}
        onChange={(e) => setText(e.target.value)}
        disabled={!enabled || busy}
        placeholder={
          inFlight
            ? 'Stop the agent and tell it what to do instead: the turn is interrupted, this message starts the next one (Ctrl+Enter)'
            : enabled
              ? 'Next message in the same conversation (Ctrl+Enter to send)'
              : FINAL.has(state)
                ? `The task is ${state}: no more messages.`
                : 'Available when the agent has finished its turn.'
        }
        onKeyDown={(e) => {
          if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) void send();
        }}
        data-testid="followup-input"
      />
      <ErrorBox error={error} />
      <div className="row">
        <button
          type="submit"
          className={inFlight ? 'btn danger' : 'btn primary'}
          disabled={!enabled || busy || !text.trim()}
          data-testid="followup-send"
          data-interrupt={inFlight ? 'true' : undefined}
          title={inFlight ? 'Stops the running turn (its pending approvals expire) and sends this message as the next turn; unlike Cancel, the task goes on' : undefined}
        >
          {busy ? (inFlight ? 'Stopping…' : 'Sending…') : inFlight ? 'Stop and redirect' : 'Send'}
        </button>
      </div>
    </form>
  );
}

function DiffView({ id }: { id: string }) {
  // '' = the whole task; else one turn's change.
  const [turn, setTurn] = useState('');
  const d = useLoad(() => api<TaskDiff>(`/tasks/${id}/diff${turn ? `?turn=${turn}` : ''}`), [id, turn]);
  const [dlError, setDlError] = useState<string>();
  const turns = d.data?.turns ?? [];
  // The patch routes need the caller's credentials: fetch, then hand the browser a blob.
  const download = async (format: 'diff' | 'mbox') => {
    setDlError(undefined);
    try {
      const res = await apiFetch(`/tasks/${id}/patch?format=${format}`);
      const url = URL.createObjectURL(await res.blob());
      const a = document.createElement('a');
      a.href = url;
      a.download = `${decodeURIComponent(id)}.${format === 'mbox' ? 'mbox' : 'patch'}`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setDlError(e instanceof Error ? e.message : String(e));
    }
  };
  return (
    <div role="tabpanel" aria-label="Diff" data-testid="task-diff">
      <div className="row">
        {turns.length > 1 && (
          <span className="field inline">
            <label htmlFor="diff-turn">Changes of</label>
            <select id="diff-turn" value={turn} onChange={(e) => setTurn(e.target.value)} data-testid="diff-turn">
              <option value="">the whole task</option>
              {turns.map((n) => (
                <option key={n} value={String(n)}>turn {n}</option>
              ))}
            </select>
          </span>
        )}
        <button type="button" className="btn small" onClick={d.reload}>
          Refresh
        </button>
        {turns.length > 0 && (
          <>
            <button type="button" className="btn small" onClick={() => download('diff')} data-testid="diff-download-patch" title="everything the task changed, for git apply">
              Download patch
            </button>
            {d.data?.base_commit && (
              <button type="button" className="btn small" onClick={() => download('mbox')} data-testid="diff-download-mbox" title="the agent's commits, for git am">
                Commits (mbox)
              </button>
            )}
          </>
        )}
      </div>
      {d.data?.base_commit && (
        <p className="muted small">
          Since commit <code>{d.data.base_commit.slice(0, 12)}</code>: the agent&apos;s commits, edits and new files.
        </p>
      )}
      <ErrorBox error={dlError} />
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
        {d.data.truncated && <p className="warn small">The diff is truncated: download the patch for all of it.</p>}
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
