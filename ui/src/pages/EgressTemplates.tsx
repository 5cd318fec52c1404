// Egress templates: named rule sets workspaces attach (built-ins, read-only, and the tenant's
// own). Owners create them, edit their rules (live in every workspace using them), delete them
// and attach or detach them to workspaces; everyone else reads.

import { useState, type FormEvent } from 'react';
import { api, post, wsRef, type CreateEgressTemplateRequest, type EgressTemplate, type SetEgressTemplateRequest, type Workspace } from '../api';
import { rulesFromText, rulesToText } from '../governance';
import { useLoad } from '../hooks';
import { Allowed, useCan, useMe } from '../roles';
import { Dialog, Empty, ErrorBox, Loading } from '../ui';

const tplId = (t: EgressTemplate) => `${t.builtin ? 'builtin' : t.tenant}-${t.name}`;
const tplPath = (t: EgressTemplate) => `/egress/templates/${encodeURIComponent(t.tenant ?? '')}/${encodeURIComponent(t.name)}`;

export function EgressTemplates() {
  const list = useLoad(() => api<EgressTemplate[]>('/egress/templates'), []);
  const canManage = useCan('manage');
  const workspaces = useLoad(() => (canManage ? api<Workspace[]>('/workspaces') : Promise.resolve([])), [canManage]);
  return (
    <section aria-labelledby="etpl-title">
      <div className="page-head">
        <h1 id="etpl-title">Egress templates</h1>
      </div>
      <p className="muted small">
        Named egress rules (first match wins, anything unmatched is denied) that workspaces attach after their own rules. A change
        applies at once to every workspace using the template.
      </p>
      <Allowed need="manage">
        <CreateTemplate onCreated={list.reload} />
      </Allowed>
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading egress templates" />
      ) : list.data && list.data.length === 0 ? (
        <Empty>No egress templates.</Empty>
      ) : list.data ? (
        <ul className="list templates" data-testid="etpl-list">
          {list.data.map((t) => (
            <TemplateItem key={tplId(t)} t={t} workspaces={workspaces.data ?? []} onChange={list.reload} />
          ))}
        </ul>
      ) : null}
    </section>
  );
}

function TemplateItem({ t, workspaces, onChange }: { t: EgressTemplate; workspaces: Workspace[]; onChange: () => void }) {
  const [editing, setEditing] = useState(false);
  const [confirm, setConfirm] = useState(false);
  const [error, setError] = useState<string>();
  const usedBy = t.used_by ?? [];
  const act = async (fn: () => Promise<unknown>) => {
    setError(undefined);
    try {
      await fn();
      onChange();
      return true;
    } catch (e) {
      setError((e as Error).message);
      return false;
    }
  };
  const remove = (force: boolean) =>
    act(() => api(`${tplPath(t)}${force ? '?force=true' : ''}`, { method: 'DELETE' })).finally(() => setConfirm(false));
  const detach = (ws: string) => act(() => api(`/workspaces/${wsRef(ws)}/egress/templates/${encodeURIComponent(t.name)}`, { method: 'DELETE' }));
  return (
    <li data-testid={`etpl-${tplId(t)}`}>
      <div className="grow">
        <div className="row tight">
          <strong>{t.name}</strong>
          {t.builtin ? <span className="badge small">built-in</span> : <span className="badge small">{t.tenant}</span>}
        </div>
        {t.description && <p className="muted small">{t.description}</p>}
        {editing ? (
          <EditRules
            t={t}
            onDone={(changed) => {
              setEditing(false);
              if (changed) onChange();
            }}
          />
        ) : (
          <ol className="rules" data-testid={`etpl-rules-${tplId(t)}`}>
            {t.rules.map((r, i) => (
              <li key={i}>
                <code className={r.startsWith('deny') ? 'deny' : 'allow'}>{r}</code>
              </li>
            ))}
          </ol>
        )}
        <p className="small">
          <span className="muted">Used by: </span>
          {usedBy.length === 0 ? (
            <span className="muted">no workspace</span>
          ) : (
            usedBy.map((ws) => (
              <span key={ws} className="chip" data-testid={`etpl-used-${tplId(t)}-${ws.replace('/', '-')}`}>
                {ws}
                <Allowed need="manage">
                  <button type="button" className="btn link small" onClick={() => detach(ws)} aria-label={`Detach ${t.name} from ${ws}`}>
                    detach
                  </button>
                </Allowed>
              </span>
            ))
          )}
        </p>
        <Allowed need="manage">
          <Attach t={t} workspaces={workspaces} onAttach={(ws) => act(() => post(`/workspaces/${wsRef(ws)}/egress/templates`, { template: t.name }))} />
          {!t.builtin && !editing && (
            <div className="row">
              <button type="button" className="btn small" onClick={() => setEditing(true)} data-testid={`etpl-edit-${tplId(t)}`}>
                Edit rules
              </button>
              <button type="button" className="btn small danger" onClick={() => setConfirm(true)} data-testid={`etpl-delete-${tplId(t)}`}>
                Delete
              </button>
            </div>
          )}
          {confirm && (
            <Dialog open={confirm} title={`Delete egress template ${t.name}?`} onClose={() => setConfirm(false)} testid="etpl-delete-dialog">
              <p>{usedBy.length ? `It is attached to ${usedBy.join(', ')}: deleting detaches it there first.` : 'No workspace uses it.'}</p>
              <div className="row">
                <button type="button" className="btn danger" onClick={() => remove(usedBy.length > 0)} data-testid="etpl-delete-confirm">
                  Delete
                </button>
                <button type="button" className="btn" onClick={() => setConfirm(false)}>
                  Keep
                </button>
              </div>
            </Dialog>
          )}
        </Allowed>
        {error && (
          <p className="error-box" role="alert">
            {error}
          </p>
        )}
      </div>
    </li>
  );
}

/** Attach to one of the workspaces that may use it (its tenant's; any for a built-in). */
function Attach({ t, workspaces, onAttach }: { t: EgressTemplate; workspaces: Workspace[]; onAttach: (ws: string) => Promise<boolean> }) {
  const [pick, setPick] = useState('');
  const used = new Set(t.used_by ?? []);
  const candidates = workspaces
    .filter((w) => t.builtin || w.tenant === t.tenant)
    .map((w) => `${w.tenant}/${w.name}`)
    .filter((ref) => !used.has(ref));
  if (candidates.length === 0) return null;
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (pick && (await onAttach(pick))) setPick('');
  };
  return (
    <form className="inline-form wrap" onSubmit={submit} aria-label={`Attach ${t.name} to a workspace`}>
      <label className="sr-only" htmlFor={`etpl-attach-${tplId(t)}`}>
        Workspace to attach {t.name} to
      </label>
      <select id={`etpl-attach-${tplId(t)}`} value={pick} onChange={(e) => setPick(e.target.value)} data-testid={`etpl-attach-pick-${tplId(t)}`}>
        <option value="">attach to a workspace…</option>
        {candidates.map((ref) => (
          <option key={ref} value={ref}>
            {ref}
          </option>
        ))}
      </select>
      <button type="submit" className="btn small" disabled={!pick} data-testid={`etpl-attach-${tplId(t)}`}>
        Attach
      </button>
    </form>
  );
}

function EditRules({ t, onDone }: { t: EgressTemplate; onDone: (changed: boolean) => void }) {
  const [rules, setRules] = useState(rulesToText(t.rules));
  const [description, setDescription] = useState(t.description ?? '');
  const [error, setError] = useState<string>();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    const body: SetEgressTemplateRequest = { rules: rulesFromText(rules), description: description.trim() };
    try {
      await api<EgressTemplate>(tplPath(t), { method: 'PUT', body: JSON.stringify(body) });
      onDone(true);
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <form onSubmit={submit} aria-label={`Rules of ${t.name}`} data-testid={`etpl-edit-form-${tplId(t)}`}>
      <label>
        Description
        <input value={description} onChange={(e) => setDescription(e.target.value)} />
      </label>
      <label>
        Rules, one a line
        <textarea rows={Math.max(3, t.rules.length + 1)} value={rules} onChange={(e) => setRules(e.target.value)} spellCheck={false} className="mono" data-testid={`etpl-edit-rules-${tplId(t)}`} />
      </label>
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
      <div className="row">
        <button type="submit" className="btn small primary" data-testid={`etpl-save-${tplId(t)}`}>
          Save rules
        </button>
        <button type="button" className="btn small" onClick={() => onDone(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function CreateTemplate({ onCreated }: { onCreated: () => void }) {
  const me = useMe();
  const [tenant, setTenant] = useState('');
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [rules, setRules] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    const body: CreateEgressTemplateRequest = { tenant: (me?.tenant ?? tenant).trim(), name: name.trim(), rules: rulesFromText(rules) };
    if (description.trim()) body.description = description.trim();
    setBusy(true);
    try {
      await post<EgressTemplate>('/egress/templates', body);
      setName('');
      setDescription('');
      setRules('');
      onCreated();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="card form-grid" onSubmit={submit} aria-label="New egress template" data-testid="etpl-form">
      {!me?.tenant && (
        <label>
          Tenant
          <input value={tenant} onChange={(e) => setTenant(e.target.value)} required data-testid="etpl-tenant" />
        </label>
      )}
      <label>
        Name
        <input value={name} onChange={(e) => setName(e.target.value)} required maxLength={40} placeholder="internal-apis" spellCheck={false} data-testid="etpl-name" />
      </label>
      <label className="wide">
        Description
        <input value={description} onChange={(e) => setDescription(e.target.value)} data-testid="etpl-description" />
      </label>
      <label className="wide">
        Rules, one a line
        <textarea
          rows={3}
          value={rules}
          onChange={(e) => setRules(e.target.value)}
          placeholder={'allow api.example.com:443\ndeny *.example.com'}
          spellCheck={false}
          className="mono"
          data-testid="etpl-rules"
        />
      </label>
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
      <div className="wide">
        <button type="submit" className="btn primary" disabled={busy} data-testid="etpl-create">
          {busy ? 'Creating…' : 'Create template'}
        </button>
      </div>
    </form>
  );
}
