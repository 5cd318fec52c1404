// The inbox: every permission request waiting for a decision across the tenant's workspaces,
// with the decision controls (also used on the task page), and the open access requests (egress a
// workspace was denied or asked for, secrets it asked for) with approve once / always / deny.
// Laid out as cards, so it works at phone width.

import { useState } from 'react';
import { accessDecisionBody, accessPath, accessStateClass, accessTarget, type AccessScope } from '../access';
import { api, post, type AccessRequest, type Approval, type Inbox as InboxData } from '../api';
import { decisionBody, decisionPath, groupByWorkspace, headline, stateClass, type Decision } from '../approvals';
import { age, dateTime } from '../format';
import { useLoad } from '../hooks';
import { Allowed, can, useMe } from '../roles';
import { Empty, ErrorBox, Loading } from '../ui';

export function Inbox() {
  // One answer holds both: what agents asked and what workspaces were denied or asked for.
  const inbox = useLoad(() => api<InboxData>('/inbox'), [], 3000);
  const groups = groupByWorkspace(inbox.data?.approvals ?? []);
  const access = inbox.data?.access_requests ?? [];
  return (
    <section aria-labelledby="inbox-title">
      <div className="page-head">
        <h1 id="inbox-title">Inbox</h1>
      </div>
      <p className="muted small">Agents waiting for a decision. A request not decided in time is denied, and the agent is told why.</p>
      <ErrorBox error={inbox.error} onRetry={inbox.reload} />
      {inbox.loading && !inbox.data ? (
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
              <ApprovalCard key={`${a.task}/${a.id}`} a={a} showTask onDecided={inbox.reload} />
            ))}
          </div>
        ))
      )}
      <h2 id="access-title">Access requests</h2>
      <p className="muted small">
        Egress a workspace was denied, or access its agent asked for with <code>berth request</code>. Approve once (for a while), always (a rule of the
        workspace), or deny.
      </p>
      {inbox.data && access.length === 0 ? (
        <Empty>
          <span data-testid="access-empty">No open access requests.</span>
        </Empty>
      ) : (
        access.map((r) => <AccessCard key={r.id} r={r} onDecided={inbox.reload} />)
      )}
    </section>
  );
}

const TTLS: Array<[number, string]> = [
  [900, '15 min'],
  [3600, '1 hour'],
  [8 * 3600, '8 hours'],
  [86400, '1 day'],
];

/** One access request: what, how often, why; owners decide, members comment. */
export function AccessCard({ r, onDecided }: { r: AccessRequest; onDecided: () => void }) {
  const me = useMe();
  const [reason, setReason] = useState('');
  const [ttl, setTtl] = useState(3600);
  const [comment, setComment] = useState('');
  const [busy, setBusy] = useState<string>();
  const [error, setError] = useState<string>();
  const run = async (what: string, f: () => Promise<unknown>) => {
    setBusy(what);
    setError(undefined);
    try {
      await f();
      onDecided();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(undefined);
    }
  };
  const decide = (decision: 'approve' | 'deny', scope?: AccessScope) =>
    run(scope ?? decision, () => post(accessPath(r), accessDecisionBody(r, decision, { scope, ttlSeconds: ttl, reason })));
  const addComment = () =>
    run('comment', async () => {
      await post(`${accessPath(r)}/comments`, { text: comment.trim() });
      setComment('');
    });
  const rid = `acc-${r.id}`.replace(/[^a-zA-Z0-9_-]/g, '_');
  const open = r.state === 'open';
  return (
    <article className="card approval" data-testid="access-request" data-request={r.id} data-state={r.state} aria-labelledby={`${rid}-h`}>
      <div className="row approval-head">
        <span className={`badge ${accessStateClass(r.state)}`}>{r.state}</span>
        <span className="badge">{r.source === 'explicit' ? 'asked' : 'denied'}</span>
        {r.count > 1 && <span className="badge">×{r.count}</span>}
        <span className="muted small" title={dateTime(r.last_seen)}>
          {age(r.last_seen)}
        </span>
      </div>
      <h3 id={`${rid}-h`} className="approval-title mono">
        {accessTarget(r)}
      </h3>
      <p className="small">
        <a href={`#/workspaces/${encodeURIComponent(r.workspace)}`}>{r.workspace}</a>
        {r.method ? (
          <span className="mono">
            {' '}
            · {r.method} {r.path}
          </span>
        ) : null}
      </p>
      {r.agent_reason && <p className="small">Why: {r.agent_reason}</p>}
      {r.rule && <p className="muted small">Denied by: {r.rule}</p>}
      {r.comments.map((c, i) => (
        <p key={i} className="small" data-testid="access-comment">
          <span className="muted">{c.author}:</span> {c.text}
        </p>
      ))}
      {open && can(me, 'manage') && (
        <div className="approval-decide">
          <label htmlFor={`${rid}-reason`} className="small">
            Reason (recorded)
          </label>
          <input id={`${rid}-reason`} value={reason} onChange={(e) => setReason(e.target.value)} maxLength={1024} />
          {r.kind === 'egress' && (
            <>
              <label htmlFor={`${rid}-ttl`} className="small">
                Approve once for
              </label>
              <select id={`${rid}-ttl`} value={ttl} onChange={(e) => setTtl(Number(e.target.value))} data-testid="access-ttl">
                {TTLS.map(([s, label]) => (
                  <option key={s} value={s}>
                    {label}
                  </option>
                ))}
              </select>
            </>
          )}
          <div className="row">
            {r.kind === 'egress' && (
              <button type="button" className="btn primary" disabled={!!busy} onClick={() => decide('approve', 'once')} data-testid="access-once">
                {busy === 'once' ? 'Approving…' : 'Approve once'}
              </button>
            )}
            <button type="button" className="btn" disabled={!!busy} onClick={() => decide('approve', 'always')} data-testid="access-always">
              {busy === 'always' ? 'Approving…' : r.kind === 'secret' ? 'Bind the secret' : 'Approve always'}
            </button>
            <button type="button" className="btn danger" disabled={!!busy} onClick={() => decide('deny')} data-testid="access-deny">
              {busy === 'deny' ? 'Denying…' : 'Deny'}
            </button>
          </div>
        </div>
      )}
      {open && (
        <Allowed need="operate">
          <div className="approval-decide">
            <label htmlFor={`${rid}-comment`} className="small">
              Comment
            </label>
            <input id={`${rid}-comment`} value={comment} onChange={(e) => setComment(e.target.value)} maxLength={1024} data-testid="access-comment-input" />
            <div className="row">
              <button type="button" className="btn" disabled={!!busy || !comment.trim()} onClick={addComment} data-testid="access-comment-add">
                {busy === 'comment' ? 'Saving…' : 'Comment'}
              </button>
            </div>
          </div>
        </Allowed>
      )}
      <ErrorBox error={error} />
    </article>
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
