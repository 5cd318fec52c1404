// Tenants with their quotas and what they hold; admins change a tenant's quota.

import { useState, type FormEvent } from 'react';
import { api, type TenantInfo, type TenantQuota, type TenantQuotaReport } from '../api';
import { useLoad } from '../hooks';
import { Allowed } from '../roles';
import { Empty, ErrorBox, Loading } from '../ui';

const of = (used: string | number, max: string | number | null | undefined) => `${used} / ${max ?? '∞'}`;

export function Tenants() {
  const list = useLoad(() => api<TenantInfo[]>('/tenants'), []);
  return (
    <section aria-labelledby="tenants-title">
      <div className="page-head">
        <h1 id="tenants-title">Tenants</h1>
      </div>
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading tenants" />
      ) : list.data && list.data.length === 0 ? (
        <Empty>No tenants yet: one appears with its first workspace or token.</Empty>
      ) : list.data ? (
        <div className="table-wrap">
          <table className="table cards" data-testid="tenants-table">
            <thead>
              <tr>
                <th scope="col">Tenant</th>
                <th scope="col">Workspaces</th>
                <th scope="col">Memory</th>
                <th scope="col">CPUs</th>
                <th scope="col">Tasks</th>
                <th scope="col"><span className="sr-only">Quota</span></th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((t) => (
                <TenantRow key={t.name} t={t} onChange={list.reload} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}

function TenantRow({ t, onChange }: { t: TenantInfo; onChange: () => void }) {
  const [editing, setEditing] = useState(false);
  return (
    <tr data-testid={`tenant-${t.name}`}>
      <th scope="row" data-label="Tenant">
        {t.name}
      </th>
      <td data-label="Workspaces">{of(t.used.workspaces, t.quota.max_workspaces)}</td>
      <td data-label="Memory">{of(t.used.memory, t.quota.memory)}</td>
      <td data-label="CPUs">{of(t.used.cpus, t.quota.cpus)}</td>
      <td data-label="Tasks">{of(t.used.tasks, t.quota.max_tasks)}</td>
      <td className="actions">
        <Allowed need="admin">
          {editing ? (
            <QuotaForm
              t={t}
              onDone={() => {
                setEditing(false);
                onChange();
              }}
            />
          ) : (
            <button type="button" className="btn small" onClick={() => setEditing(true)} data-testid={`quota-edit-${t.name}`}>
              Edit quota
            </button>
          )}
        </Allowed>
      </td>
    </tr>
  );
}

function QuotaForm({ t, onDone }: { t: TenantInfo; onDone: () => void }) {
  const [ws, setWs] = useState(t.quota.max_workspaces?.toString() ?? '');
  const [memory, setMemory] = useState(t.quota.memory ?? '');
  const [cpus, setCpus] = useState(t.quota.cpus ?? '');
  const [tasks, setTasks] = useState(t.quota.max_tasks?.toString() ?? '');
  const [error, setError] = useState<string>();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const body: TenantQuota = {};
    if (ws.trim()) body.max_workspaces = Number(ws);
    if (memory.trim()) body.memory = memory.trim();
    if (cpus.trim()) body.cpus = cpus.trim();
    if (tasks.trim()) body.max_tasks = Number(tasks);
    try {
      await api<TenantQuotaReport>(`/tenants/${encodeURIComponent(t.name)}/quota`, { method: 'PUT', body: JSON.stringify(body) });
      onDone();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <form className="form-grid" onSubmit={submit} aria-label={`Quota of ${t.name}`} data-testid={`quota-form-${t.name}`}>
      <label>
        Workspaces
        <input inputMode="numeric" value={ws} onChange={(e) => setWs(e.target.value)} placeholder="no limit" />
      </label>
      <label>
        Memory
        <input value={memory} onChange={(e) => setMemory(e.target.value)} placeholder="e.g. 8g" />
      </label>
      <label>
        CPUs
        <input value={cpus} onChange={(e) => setCpus(e.target.value)} placeholder="e.g. 4" />
      </label>
      <label>
        Tasks
        <input inputMode="numeric" value={tasks} onChange={(e) => setTasks(e.target.value)} placeholder="no limit" />
      </label>
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
      <button type="submit" className="btn primary small" data-testid={`quota-save-${t.name}`}>
        Save
      </button>
    </form>
  );
}
