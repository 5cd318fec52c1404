// The inbox: every permission request waiting for a decision across the tenant's workspaces,
// with the decision controls (also used on the task page). Laid out as cards, so it works at
// phone width.

import { useState } from 'react';
import { api, post, type Approval } from '../api';
import { decisionBody, decisionPath, groupByWorkspace, headline, stateClass, type Decision } from '../approvals';
import { age, dateTime } from '../format';
import { useLoad } from '../hooks';
import { Allowed } from '../roles';
import { Empty, ErrorBox, Loading } from '../ui';

export function Inbox() {
  const list = useLoad(() => api<Approval[]>('/inbox'), [], 3000);
  const groups = groupByWorkspace(list.data ?? []);
  return (
    <section aria-labelledby="inbox-title">
      <div className="page-head">
        <h1 id="inbox-title">Inbox</h1>
      </div>
      <p className="muted small">Agents waiting for a decision. A request not decided in time is denied, and the agent is told why.</p>
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading the inbox" />
      ) : groups.length === 0 ? (
        <Empty>
          <span data-testid="inbox-empty">Nothing is waiting for a decision.</span>
        </Empty>
      ) : (
        groups.map((g) => (
          <div key={g.workspace} className="inbox-group">
            <h2 className="small">
              <a href={`#/workspaces/${encodeURIComponent(g.workspace)}`}>{g.workspace}</a>
            </h2>
            {g.items.map((a) => (
              <ApprovalCard key={`${a.task}/${a.id}`} a={a} showTask onDecided={list.reload} />
            ))}
          </div>
        ))
      )}
    </section>
  );
}

/** One request: what the agent wants to do, why, the risks, and (for operators) the decision. */
export function ApprovalCard({ a, showTask, onDecided }: { a: Approval; showTask?: boolean; onDecided: () => void }) {
  const [reason, setReason] = useState('');
  const [always, setAlways] = useState(false);
  const [busy, setBusy] = useState<Decision>();
  const [error, setError] = useState<string>();
  const decide = async (d: Decision) => {
    setBusy(d);
    setError(undefined);
    try {
      await post(decisionPath(a), decisionBody(d, { always, reason }));
      onDecided();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(undefined);
    }
  };
  const pending = a.state === 'pending';
  const rid = `appr-${a.task}-${a.id}`.replace(/[^a-zA-Z0-9_-]/g, '_');
  return (
    <article className="card approval" data-testid="approval" data-request={a.id} data-task={a.task} data-state={a.state} aria-labelledby={`${rid}-h`}>
      <div className="row approval-head">
        <span className={`badge ${stateClass(a.state)}`}>{pending ? 'waiting' : a.state}</span>
        <span className="badge">{a.kind.replace('_', ' ')}</span>
        <span className="muted small" title={dateTime(a.created_at)}>
          {age(a.created_at)}
        </span>
      </div>
      <h3 id={`${rid}-h`} className="approval-title mono">
        {headline(a)}
      </h3>
      {showTask && (
        <p className="small">
          task <a href={`#/tasks/${encodeURIComponent(a.task)}`} className="mono">{a.task}</a> · {a.agent}
        </p>
      )}
      {a.agent_reason && <p className="small">Why: {a.agent_reason}</p>}
      {a.risks.length > 0 && (
        <p className="small warn" data-testid="approval-risks">
          Risks: {a.risks.join(', ')}
        </p>
      )}
      {a.command && a.command.includes('\n') && <pre className="out">{a.command}</pre>}
      {a.diff && (
        <pre className="diff" aria-label="change">
          {a.diff.split('\n').map((l, i) => (
            <span key={i} className={`dl ${l.startsWith('+') ? 'add' : l.startsWith('-') ? 'del' : ''}`}>
              {l}
              {'\n'}
            </span>
          ))}
        </pre>
      )}
      {!pending && (
        <p className="muted small">
          {a.state}
          {a.decided_by ? ` by ${a.decided_by}` : ''}
          {a.reason ? `: ${a.reason}` : ''}
        </p>
      )}
      {pending && (
        <Allowed need="operate">
          <div className="approval-decide">
            <label htmlFor={`${rid}-reason`} className="small">
              Reason (told to the agent when denied)
            </label>
            <input id={`${rid}-reason`} value={reason} onChange={(e) => setReason(e.target.value)} maxLength={4096} data-testid="approval-reason" />
            <label className="check small">
              <input type="checkbox" checked={always} onChange={(e) => setAlways(e.target.checked)} data-testid="approval-always" />
              Approve every later {a.tool} request of this task
            </label>
            <div className="row">
              <button type="button" className="btn primary" disabled={!!busy} onClick={() => decide('approve')} data-testid="approval-approve">
                {busy === 'approve' ? 'Approving…' : 'Approve'}
              </button>
              <button type="button" className="btn danger" disabled={!!busy} onClick={() => decide('deny')} data-testid="approval-deny">
                {busy === 'deny' ? 'Denying…' : 'Deny'}
              </button>
            </div>
            <ErrorBox error={error} />
          </div>
        </Allowed>
      )}
    </article>
  );
}
