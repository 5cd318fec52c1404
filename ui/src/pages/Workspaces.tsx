import { useState, type FormEvent } from 'react';
import { api, post, wsRef, type CreateWorkspaceRequest, type Workspace, type WorkspaceTemplate } from '../api';
import { missingParam, paramsToSend } from '../templates';
import { bytes, age, dateTime } from '../format';
import { useLoad } from '../hooks';
import { Dialog, Empty, ErrorBox, Loading, StateBadge } from '../ui';
import { Allowed } from '../roles';

export function Workspaces() {
  const list = useLoad(() => api<Workspace[]>('/workspaces'), [], 3000);
  const [showCreate, setShowCreate] = useState(false);
  return (
    <section aria-labelledby="ws-title">
      <div className="page-head">
        <h1 id="ws-title">Workspaces</h1>
        <Allowed need="operate">
          <button type="button" className="btn primary" onClick={() => setShowCreate((v) => !v)} aria-expanded={showCreate} data-testid="ws-create-toggle">
            {showCreate ? 'Close' : 'New workspace'}
          </button>
        </Allowed>
      </div>
      {showCreate && <CreateWorkspace onCreated={() => { setShowCreate(false); list.reload(); }} />}
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading workspaces" />
      ) : list.data && list.data.length === 0 ? (
        <Empty>No workspaces yet. Create one with “New workspace”.</Empty>
      ) : list.data ? (
        <div className="table-wrap">
          <table className="table cards" data-testid="ws-table">
            <thead>
              <tr>
                <th scope="col">Workspace</th>
                <th scope="col">State</th>
                <th scope="col">Limits</th>
                <th scope="col">Live usage</th>
                <th scope="col">Image</th>
                <th scope="col">Created</th>
                <th scope="col"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((w) => (
                <WsRow key={w.id} w={w} onChange={list.reload} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}

function WsRow({ w, onChange }: { w: Workspace; onChange: () => void }) {
  const id = `${w.tenant}-${w.name}`;
  const [busy, setBusy] = useState<string>();
  const [error, setError] = useState<string>();
  const [confirm, setConfirm] = useState<'stop' | 'delete' | null>(null);
  const [removeVolume, setRemoveVolume] = useState(false);
  const act = async (what: string, fn: () => Promise<unknown>) => {
    setBusy(what);
    setError(undefined);
    try {
      await fn();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(undefined);
      setConfirm(null);
      onChange();
    }
  };
  const ref = wsRef(w);
  return (
    <tr data-testid={`ws-row-${id}`} data-state={w.state}>
      <td data-label="Workspace">
        <a href={`#/workspaces/${ref}`} className="strong" data-testid={`ws-link-${id}`}>
          <span className="muted">{w.tenant}/</span>
          {w.name}
        </a>
        {w.last_failure && (
          <div className="failure" data-testid={`ws-failure-${id}`}>
            <strong>{w.last_failure.reason}</strong>: {w.last_failure.message}{' '}
            <span className="muted small">({age(w.last_failure.at)} ago)</span>
          </div>
        )}
        {w.oom_kills > 0 && <div className="failure small">OOM kills: {w.oom_kills}</div>}
        {error && <div className="error-box small" role="alert">{error}</div>}
      </td>
      <td data-label="State">
        <StateBadge state={w.state} testid={`ws-state-${id}`} />
      </td>
      <td data-label="Limits" className="nowrap">
        {bytes(w.limits.memory_bytes)} · {w.limits.cpus} CPU · {w.limits.pids} pids
      </td>
      <td data-label="Live usage">{w.state === 'running' ? <LiveUsage ws={ref} /> : <span className="muted">—</span>}</td>
      <td data-label="Image" className="mono small ellipsis" title={w.image}>
        {w.image}
      </td>
      <td data-label="Created" title={dateTime(w.created_at)}>
        {age(w.created_at)} ago
      </td>
      <td className="actions">
        <Allowed need="operate">
        {w.state === 'running' ? (
          <button type="button" className="btn small" disabled={!!busy} onClick={() => setConfirm('stop')} data-testid={`ws-stop-${id}`}>
            {busy === 'stop' ? 'Stopping…' : 'Stop'}
          </button>
        ) : (
          <button type="button" className="btn small" disabled={!!busy || w.state === 'starting' || w.state === 'creating'} onClick={() => act('start', () => post(`/workspaces/${ref}/start`))} data-testid={`ws-start-${id}`}>
            {busy === 'start' ? 'Starting…' : 'Start'}
          </button>
        )}
        </Allowed>
        <Allowed need="manage">
        <button type="button" className="btn small danger" disabled={!!busy} onClick={() => { setRemoveVolume(false); setConfirm('delete'); }} data-testid={`ws-delete-${id}`}>
          {busy === 'delete' ? 'Deleting…' : 'Delete'}
        </button>
        </Allowed>
        <Dialog open={confirm === 'stop'} title={`Stop ${w.tenant}/${w.name}?`} onClose={() => setConfirm(null)}>
          <p>Running agent tasks in this workspace will fail. Terminal sessions end. The home volume is kept.</p>
          <div className="row">
            <button type="button" className="btn" onClick={() => setConfirm(null)}>Cancel</button>
            <button type="button" className="btn primary" onClick={() => act('stop', () => post(`/workspaces/${ref}/stop`))} data-testid="confirm-stop">
              Stop workspace
            </button>
          </div>
        </Dialog>
        <Dialog open={confirm === 'delete'} title={`Delete ${w.tenant}/${w.name}?`} onClose={() => setConfirm(null)}>
          <p>The container is removed. The home volume <code>{w.volume}</code> is kept unless you remove it too.</p>
          <label className="check">
            <input type="checkbox" checked={removeVolume} onChange={(e) => setRemoveVolume(e.target.checked)} data-testid="confirm-delete-volume" />
            Also remove the home volume (all files in /home/agent are lost)
          </label>
          <div className="row">
            <button type="button" className="btn" onClick={() => setConfirm(null)}>Cancel</button>
            <button type="button" className="btn danger" onClick={() => act('delete', () => api(`/workspaces/${ref}${removeVolume ? '?volume=true' : ''}`, { method: 'DELETE' }))} data-testid="confirm-delete">
              Delete workspace
            </button>
          </div>
        </Dialog>
      </td>
    </tr>
  );
}

export function LiveUsage({ ws }: { ws: string }) {
  const d = useLoad(() => api<Workspace>(`/workspaces/${ws}`), [ws], 4000);
  const u = d.data?.usage;
  if (d.error && !u) return <span className="muted small">{d.error}</span>;
  if (!u) return <span className="muted small">…</span>;
  const pct = u.memory_limit_bytes ? Math.min(100, (u.memory_bytes / u.memory_limit_bytes) * 100) : 0;
  return (
    <div className="usage" data-testid="ws-usage">
      {/* Each figure stays on one line; the figures wrap between them on a narrow screen. */}
      <div>
        <span className="nowrap">mem {bytes(u.memory_bytes)}</span> <span className="nowrap">/ {bytes(u.memory_limit_bytes)}</span>
      </div>
      <div className="meter" role="meter" aria-label="memory used" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(pct)}>
        <span style={{ width: `${pct}%` }} className={pct > 90 ? 'hot' : ''} />
      </div>
      <div className="small muted">
        <span className="nowrap">cpu {u.cpu_percent.toFixed(1)}%</span> · <span className="nowrap">{u.pids} pids</span>
      </div>
    </div>
  );
}

function CreateWorkspace({ onCreated }: { onCreated: () => void }) {
  const [f, setF] = useState({ name: '', tenant: '', memory: '', cpus: '', pids: '', egress: '' });
  const templates = useLoad(() => api<WorkspaceTemplate[]>('/templates'), []);
  const [template, setTemplate] = useState('');
  const [values, setValues] = useState<Record<string, string>>({});
  const chosen = templates.data?.find((t) => `${t.tenant}/${t.name}` === template);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const set = (k: keyof typeof f) => (e: { target: { value: string } }) => setF({ ...f, [k]: e.target.value });
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    const body: CreateWorkspaceRequest = { name: f.name.trim() };
    if (f.tenant.trim()) body.tenant = f.tenant.trim();
    if (f.memory.trim()) body.memory = f.memory.trim();
    if (f.cpus.trim()) body.cpus = f.cpus.trim();
    if (f.pids.trim()) {
      const n = Number(f.pids.trim());
      if (!Number.isInteger(n) || n <= 0) {
        setError('pids must be a positive whole number');
        setBusy(false);
        return;
      }
      body.pids = n;
    }
    const rules = f.egress
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .map((l) => (/^(allow|deny)\s/.test(l) ? l : `allow ${l}`));
    if (rules.length) body.egress = rules;
    if (chosen) {
      const missing = missingParam(chosen.params, values);
      if (missing) {
        setError(missing);
        setBusy(false);
        return;
      }
      body.tenant = chosen.tenant;
      body.template = chosen.name;
      body.params = paramsToSend(chosen.params, values);
    }
    try {
      await post('/workspaces', body);
      onCreated();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="card form-grid" onSubmit={submit} aria-labelledby="ws-create-title" data-testid="ws-create-form">
      <h2 id="ws-create-title">New workspace</h2>
      <div className="field">
        <label htmlFor="ws-name">Name</label>
        <input id="ws-name" data-testid="ws-create-name" value={f.name} onChange={set('name')} required pattern="[a-z0-9]([a-z0-9\-]*[a-z0-9])?" aria-describedby="ws-name-help" autoFocus />
        <small id="ws-name-help" className="muted">lowercase letters, digits, inner dashes</small>
      </div>
      {(templates.data?.length ?? 0) > 0 && (
        <div className="field wide">
          <label htmlFor="ws-template">Template</label>
          <select id="ws-template" data-testid="ws-create-template" value={template} onChange={(e) => { setTemplate(e.target.value); setValues({}); }}>
            <option value="">none (an empty workspace)</option>
            {templates.data?.map((t) => (
              <option key={`${t.tenant}/${t.name}`} value={`${t.tenant}/${t.name}`}>
                {t.tenant}/{t.name} (revision {t.revision}){t.description ? ` — ${t.description}` : ''}
              </option>
            ))}
          </select>
          <small className="muted">The template's repositories are cloned and its setup steps run; the workspace page shows the progress.</small>
        </div>
      )}
      {chosen?.params.map((p) => (
        <div className="field" key={p.name}>
          <label htmlFor={`ws-param-${p.name}`}>
            {p.name}
            {p.required ? ' *' : ''}
          </label>
          <input
            id={`ws-param-${p.name}`}
            data-testid={`ws-create-param-${p.name}`}
            value={values[p.name] ?? ''}
            onChange={(e) => setValues({ ...values, [p.name]: e.target.value })}
            required={p.required}
            placeholder={p.default ?? ''}
          />
          {p.description && <small className="muted">{p.description}</small>}
        </div>
      ))}
      <div className="field">
        <label htmlFor="ws-tenant">Tenant</label>
        <input id="ws-tenant" data-testid="ws-create-tenant" value={f.tenant} onChange={set('tenant')} placeholder="default" />
      </div>
      <div className="field">
        <label htmlFor="ws-memory">Memory</label>
        <input id="ws-memory" data-testid="ws-create-memory" value={f.memory} onChange={set('memory')} placeholder="server default, e.g. 2g" />
      </div>
      <div className="field">
        <label htmlFor="ws-cpus">CPUs</label>
        <input id="ws-cpus" data-testid="ws-create-cpus" value={f.cpus} onChange={set('cpus')} placeholder="e.g. 1 or 0.5" inputMode="decimal" />
      </div>
      <div className="field">
        <label htmlFor="ws-pids">Pids</label>
        <input id="ws-pids" data-testid="ws-create-pids" value={f.pids} onChange={set('pids')} placeholder="e.g. 1024" inputMode="numeric" />
      </div>
      <div className="field wide">
        <label htmlFor="ws-egress">Egress allow rules (optional, one per line)</label>
        <textarea id="ws-egress" data-testid="ws-create-egress" rows={3} value={f.egress} onChange={set('egress')} placeholder={'registry.npmjs.org\n*.github.com:443'} aria-describedby="ws-egress-help" />
        <small id="ws-egress-help" className="muted">Default: all egress denied. A bare host means “allow HOST”; full rules like “deny api.github.com POST /repos” work too.</small>
      </div>
      <ErrorBox error={error} />
      <div className="row wide">
        <button type="submit" className="btn primary" disabled={busy} data-testid="ws-create-submit">
          {busy ? 'Creating… (starting the container)' : 'Create workspace'}
        </button>
      </div>
    </form>
  );
}
