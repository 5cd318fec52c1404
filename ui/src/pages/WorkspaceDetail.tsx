import { useEffect, useRef, useState, type FormEvent } from 'react';
import {
  api,
  getToken,
  post,
  wsRef,
  type EffectiveEgress,
  type EgressLogEntry,
  type EgressTemplate,
  type ProvisionStatus,
  type Session,
  type Task,
  type Workspace,
} from '../api';
import { age, bytes, dateTime } from '../format';
import { navigate, useLoad } from '../hooks';
import { AGENT_BUTTONS, agentSessionRequest, guessTerminalSize, terminalRoute, type AgentName } from '../agentSessions';
import { Empty, ErrorBox, Loading, StateBadge } from '../ui';
import { LiveUsage } from './Workspaces';
import { TaskTable } from './Tasks';
import { Allowed, useCan } from '../roles';
import { focusStep, provisioningLive, stepLine } from '../templates';
import { followSse } from '../sse';

export function WorkspaceDetail({ ws }: { ws: string }) {
  const ref = wsRef(ws);
  const w = useLoad(() => api<Workspace>(`/workspaces/${ref}`), [ref], 5000);
  if (w.loading && !w.data) return <Loading what="Loading workspace" />;
  if (!w.data) return <ErrorBox error={w.error ?? 'not found'} onRetry={w.reload} />;
  const d = w.data;
  return (
    <section aria-labelledby="wsd-title" data-testid="ws-detail">
      <p className="crumbs">
        <a href="#/workspaces">Workspaces</a> /
      </p>
      <div className="page-head">
        <h1 id="wsd-title">
          <span className="muted">{d.tenant}/</span>
          {d.name}
        </h1>
        <StateBadge state={d.state} testid="ws-detail-state" />
        {(d.state === 'stopped' || d.state === 'failed') && (
          <Allowed need="operate">
            <StartButton ws={ref} onDone={w.reload} />
          </Allowed>
        )}
      </div>
      <ErrorBox error={w.error} />
      <dl className="facts">
        <div><dt>Limits</dt><dd>{bytes(d.limits.memory_bytes)} · {d.limits.cpus} CPU · {d.limits.pids} pids</dd></div>
        <div><dt>Network</dt><dd>{d.network}</dd></div>
        <div><dt>Image</dt><dd className="mono small ellipsis" title={d.image}>{d.image}</dd></div>
        <div><dt>Created</dt><dd>{dateTime(d.created_at)}</dd></div>
        {d.state === 'running' && <div><dt>Usage</dt><dd><LiveUsage ws={ref} /></dd></div>}
        {d.daemon && (
          <div>
            <dt>Daemon</dt>
            <dd>
              {d.daemon.reachable ? 'reachable' : 'unreachable'}
              {d.daemon.outdated && <strong className="warn"> · outdated: restart the workspace</strong>}
              {d.daemon.message && <span className="muted"> · {d.daemon.message}</span>}
            </dd>
          </div>
        )}
        {d.last_failure && (
          <div>
            <dt>Last failure</dt>
            <dd className="failure" data-testid="ws-detail-failure">
              <strong>{d.last_failure.reason}</strong>: {d.last_failure.message} ({dateTime(d.last_failure.at)})
            </dd>
          </div>
        )}
        {d.oom_kills > 0 && <div><dt>OOM kills</dt><dd className="failure">{d.oom_kills}</dd></div>}
        {(d.mcp_servers ?? []).length > 0 && (
          <div>
            <dt>MCP servers</dt>
            <dd data-testid="ws-detail-mcp">
              {(d.mcp_servers ?? []).map((m) => (
                <div key={m.name}>
                  <strong>{m.name}</strong>{' '}
                  <span className="mono small">
                    {m.type === 'stdio' ? [m.command ?? '', ...(m.args ?? [])].join(' ') : m.url}
                  </span>
                </div>
              ))}
            </dd>
          </div>
        )}
      </dl>
      <Provisioning ws={ref} onChange={w.reload} />
      <Sessions ws={ref} running={d.state === 'running'} />
      <WsTasks ws={ref} running={d.state === 'running'} />
      <Egress ws={ref} tenant={d.tenant} />
    </section>
  );
}

/**
 * The provisioning of a workspace made from a template: the step list with each step's state,
 * the running (or failed) step's log live (the server's event stream), and Retry for a failed
 * one. Nothing for a workspace not made from a template (asked once).
 */
function Provisioning({ ws, onChange }: { ws: string; onChange: () => void }) {
  const plain = useRef(false);
  const last = useRef<string | undefined>(undefined);
  const changed = useRef(onChange);
  changed.current = onChange;
  // Asked once (is it made from a template?); then the server's event stream keeps it live.
  const p = useLoad(
    async () => {
      if (plain.current) return null;
      try {
        return await api<ProvisionStatus>(`/workspaces/${ws}/provision`);
      } catch (e) {
        if (e instanceof Error && /not made from a template/.test(e.message)) {
          plain.current = true;
          return null;
        }
        throw e;
      }
    },
    [ws],
  );
  const [live, setLive] = useState<ProvisionStatus>();
  // Bumped after a retry: the stream ended with the failure, a new one follows the retry.
  const [round, setRound] = useState(0);
  const made = !!p.data;
  useEffect(() => {
    if (!made) return;
    return followSse({
      url: (after) => `/api/v1/workspaces/${ws}/provision/stream?after=${after}`,
      token: getToken(),
      // A finished stream is asked again now and then: a retry or upgrade from elsewhere (the
      // CLI) starts a new provisioning, whose statuses have newer ids.
      reconnectOnEnd: () => true,
      retryMs: 3000,
      onMessage: (msg) => {
        let s: ProvisionStatus;
        try {
          s = JSON.parse(msg.data);
        } catch {
          return;
        }
        // The workspace's own state follows the provisioning's (failed{provision}, running).
        if (last.current !== undefined && last.current !== s.state) changed.current();
        last.current = s.state;
        setLive(s);
      },
    });
  }, [ws, made, round]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const s = live ?? p.data;
  if (!s) return null;
  const focus = focusStep(s.steps);
  const retry = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await post(`/workspaces/${ws}/provision`, { retry: true });
      setRound((r) => r + 1);
      onChange();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="card" aria-labelledby="prov-title" data-testid="ws-provision">
      <div className="page-head">
        <h2 id="prov-title">
          Provisioning <span className="muted small">template {s.template} · revision {s.revision}</span>
        </h2>
        <StateBadge state={s.state} testid="ws-provision-state" />
        {s.state === 'failed' && (
          <Allowed need="operate">
            <button type="button" className="btn small" onClick={retry} disabled={busy} data-testid="ws-provision-retry">
              {busy ? 'Retrying…' : 'Retry from the failed step'}
            </button>
          </Allowed>
        )}
      </div>
      {provisioningLive(s.state) && <p className="muted small">Agents and tasks start once setup has finished.</p>}
      {s.message && <p className="failure small">{s.message}</p>}
      <ol className="steps" data-testid="ws-provision-steps">
        {s.steps.map((st) => (
          <li key={st.index} data-state={st.state}>
            {stepLine(st, s.steps.length)}
            {focus?.index === st.index && st.log && <pre className="out small" data-testid="ws-provision-log">{st.log}</pre>}
          </li>
        ))}
      </ol>
      <ErrorBox error={error ?? p.error} />
    </section>
  );
}

/** Starts a stopped (or failed) workspace from its own page. */
function StartButton({ ws, onDone }: { ws: string; onDone: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const start = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await post(`/workspaces/${ws}/start`);
      onDone();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" className="btn primary small" onClick={start} disabled={busy} data-testid="ws-detail-start">
        {busy ? 'Starting…' : 'Start'}
      </button>
      <ErrorBox error={error} />
    </>
  );
}

function Sessions({ ws, running }: { ws: string; running: boolean }) {
  const s = useLoad(() => (running ? api<Session[]>(`/workspaces/${ws}/sessions`) : Promise.resolve([] as Session[])), [ws, running], 5000);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  // A login shell, or an agent's TUI (configured like a task); the terminal opens at once.
  const create = async (agent?: AgentName) => {
    setBusy(true);
    setError(undefined);
    try {
      const { cols, rows } = guessTerminalSize(window.innerWidth, window.innerHeight);
      const body = agent ? agentSessionRequest(agent, cols, rows) : {};
      const sess = await post<Session>(`/workspaces/${ws}/sessions`, body);
      navigate(terminalRoute(ws, sess));
    } catch (e) {
      setError((e as Error).message);
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="sessions-title" className="block">
      <div className="page-head">
        <h2 id="sessions-title">Terminal sessions</h2>
        <Allowed need="operate">
          <div className="row" role="group" aria-label="New terminal session">
            <button type="button" className="btn primary" onClick={() => create()} disabled={!running || busy} data-testid="session-new">
              {busy ? 'Creating…' : 'New session'}
            </button>
            {AGENT_BUTTONS.map((b) => (
              <button
                type="button"
                key={b.agent}
                className="btn"
                onClick={() => create(b.agent)}
                disabled={!running || busy}
                title={`${b.label} in a terminal, through berth's gateway`}
                data-testid={`session-new-${b.agent}`}
              >
                {b.label}
              </button>
            ))}
          </div>
        </Allowed>
      </div>
      <ErrorBox error={error ?? s.error} />
      {!running ? (
        <Empty>The workspace is not running: start it to use terminals.</Empty>
      ) : s.loading && !s.data ? (
        <Loading what="Loading sessions" />
      ) : s.data && s.data.length === 0 ? (
        <Empty>No sessions. “New session” opens a login shell.</Empty>
      ) : (
        <ul className="list">
          {s.data?.map((x) => (
            <li key={x.id} data-testid={`session-${x.name}`}>
              <div>
                <strong>{x.name}</strong> <StateBadge state={x.state} />
                <span className="muted small">
                  {' '}
                  {x.command.join(' ') || 'login shell'} · {x.cols}×{x.rows} · {x.attached} attached · {age(x.created_at)} ago
                  {x.exit_code != null && ` · exit ${x.exit_code}`}
                </span>
              </div>
              <a className="btn small" href={`#/workspaces/${ws}/terminal/${encodeURIComponent(x.name)}`} data-testid={`session-open-${x.name}`}>
                Open terminal
              </a>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function WsTasks({ ws, running }: { ws: string; running: boolean }) {
  const t = useLoad(() => api<Task[]>(`/tasks?workspace=${ws}`), [ws], 4000);
  const canOperate = useCan('operate');
  return (
    <section aria-labelledby="wstasks-title" className="block">
      <div className="page-head">
        <h2 id="wstasks-title">Tasks</h2>
        {running && canOperate && (
          <a className="btn" href={`#/tasks/new?workspace=${ws}`} data-testid="ws-task-new">
            New task
          </a>
        )}
      </div>
      <ErrorBox error={t.error} onRetry={t.reload} />
      {t.loading && !t.data ? <Loading what="Loading tasks" /> : t.data && t.data.length === 0 ? <Empty>No tasks in this workspace yet.</Empty> : t.data && <TaskTable tasks={t.data} showWorkspace={false} />}
    </section>
  );
}

function Egress({ ws, tenant }: { ws: string; tenant: string }) {
  // The rules in force: the workspace's own (removable by index), then its templates'.
  const rules = useLoad(() => api<EffectiveEgress>(`/workspaces/${ws}/egress/effective`), [ws]);
  const templates = useLoad(() => api<EgressTemplate[]>(`/egress/templates?tenant=${encodeURIComponent(tenant)}`), [tenant]);
  const log = useLoad(() => api<EgressLogEntry[]>(`/workspaces/${ws}/egress/log?limit=10000`), [ws], 5000);
  const [rule, setRule] = useState('');
  const [pick, setPick] = useState('');
  const [error, setError] = useState<string>();
  const change = async (call: () => Promise<unknown>) => {
    setError(undefined);
    try {
      await call();
      rules.reload();
      templates.reload();
      return true;
    } catch (err) {
      setError((err as Error).message);
      return false;
    }
  };
  const add = async (e: FormEvent) => {
    e.preventDefault();
    let r = rule.trim();
    if (!r) return;
    if (!/^(allow|deny)\s/.test(r)) r = `allow ${r}`;
    if (await change(() => post(`/workspaces/${ws}/egress/rules`, { rule: r }))) setRule('');
  };
  const remove = (i: number) => change(() => api(`/workspaces/${ws}/egress/rules/${i}`, { method: 'DELETE' }));
  const attach = async (e: FormEvent) => {
    e.preventDefault();
    if (!pick) return;
    if (await change(() => post(`/workspaces/${ws}/egress/templates`, { template: pick }))) setPick('');
  };
  const detach = (name: string) =>
    change(() => api(`/workspaces/${ws}/egress/templates/${encodeURIComponent(name)}`, { method: 'DELETE' }));
  const attached = rules.data?.templates ?? [];
  const attachable = (templates.data ?? []).filter((t) => !attached.includes(t.name));
  const entries = (log.data ?? []).slice(-200).reverse();
  return (
    <section aria-labelledby="egress-title" className="block">
      <h2 id="egress-title">Egress</h2>
      <p className="muted small">
        The workspace's own rules come first, then each attached template's, in order. First matching rule wins; anything unmatched is denied.
      </p>
      <ErrorBox error={error ?? rules.error} />
      {rules.data && rules.data.rules.length === 0 && <Empty>No rules: all egress is denied.</Empty>}
      {rules.data && rules.data.rules.length > 0 && (
        <ol className="rules effective" data-testid="egress-rules">
          {rules.data.rules.map((r, i) => (
            <li key={`${i}-${r.label}`} data-source={r.source}>
              <span className="idx muted mono" aria-hidden="true">{r.source === 'workspace' ? r.index : '–'}</span>
              <code className={r.rule.startsWith('deny') ? 'deny' : 'allow'}>{r.rule}</code>
              {r.source === 'workspace' ? (
                <Allowed need="manage">
                  <button type="button" className="btn small" onClick={() => remove(r.index)} aria-label={`Remove rule ${r.index}: ${r.rule}`}>
                    Remove
                  </button>
                </Allowed>
              ) : (
                <span className="badge small" title="from an egress template">template {r.template}</span>
              )}
            </li>
          ))}
        </ol>
      )}
      <Allowed need="manage">
      <form onSubmit={add} className="inline-form">
        <label htmlFor="egress-rule" className="sr-only">New rule</label>
        <input id="egress-rule" value={rule} onChange={(e) => setRule(e.target.value)} placeholder="allow pypi.org  ·  deny api.github.com POST /repos" data-testid="egress-rule-input" />
        <button type="submit" className="btn" data-testid="egress-rule-add">Add rule</button>
      </form>
      </Allowed>
      <h3>Templates</h3>
      {attached.length === 0 ? (
        <p className="muted small">No templates attached.</p>
      ) : (
        <ol className="rules" data-testid="egress-templates">
          {attached.map((name) => (
            <li key={name}>
              <code>{name}</code>
              <Allowed need="manage">
                <button type="button" className="btn small" onClick={() => detach(name)} aria-label={`Detach template ${name}`}>
                  Detach
                </button>
              </Allowed>
            </li>
          ))}
        </ol>
      )}
      <Allowed need="manage">
      <form onSubmit={attach} className="inline-form">
        <label htmlFor="egress-template" className="sr-only">Template to attach</label>
        <select id="egress-template" value={pick} onChange={(e) => setPick(e.target.value)} data-testid="egress-template-pick">
          <option value="">Attach a template…</option>
          {attachable.map((t) => (
            <option key={`${t.tenant ?? ''}/${t.name}`} value={t.name}>
              {t.name}
              {t.builtin ? ' (built-in)' : ''}
              {t.description ? ` — ${t.description}` : ''}
            </option>
          ))}
        </select>
        <button type="submit" className="btn" disabled={!pick} data-testid="egress-template-attach">Attach</button>
      </form>
      </Allowed>
      <h3>Egress log</h3>
      <ErrorBox error={log.error} />
      {log.loading && !log.data ? (
        <Loading what="Loading egress log" />
      ) : entries.length === 0 ? (
        <Empty>No egress attempts recorded.</Empty>
      ) : (
        <div className="table-wrap">
          <table className="table cards small" data-testid="egress-log">
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Decision</th>
                <th scope="col">Request</th>
                <th scope="col">Rule / reason</th>
                <th scope="col">Bytes ↑/↓</th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <tr key={e.id} className={e.decision === 'deny' ? 'denied' : ''} data-decision={e.decision}>
                  <td data-label="When" title={dateTime(e.at)}>{age(e.at)} ago</td>
                  <td data-label="Decision"><span className={`badge ${e.decision === 'deny' ? 'state-failed' : 'state-running'}`}>{e.decision}</span></td>
                  <td data-label="Request" className="mono">
                    {e.method ?? 'CONNECT'} {e.host}:{e.port}{e.path ?? ''}
                    {e.intercepted && <span className="muted"> (inspected)</span>}
                  </td>
                  <td data-label="Rule / reason">{e.rule ? <code>{e.rule}</code> : null} <span className="muted">{e.reason}</span></td>
                  <td data-label="Bytes ↑/↓" className="nowrap">{bytes(e.bytes_up)} / {bytes(e.bytes_down)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
