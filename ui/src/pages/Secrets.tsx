// The tenant's secrets: names, dates and which workspaces bind them, never a value. Owners set
// a value (write-only: the field is cleared and nothing reads it back), rotate and delete;
// members see the list only (viewers cannot list secrets at all).

import { useState, type FormEvent } from 'react';
import { api, type SecretInfo } from '../api';
import { age, dateTime } from '../format';
import { bindingLine, secretNameError, SECRET_NAME_MAX } from '../governance';
import { useLoad } from '../hooks';
import { Allowed, useMe } from '../roles';
import { Dialog, Empty, ErrorBox, Loading } from '../ui';

const secretPath = (tenant: string, name: string) => `/secrets/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`;

/** `PUT /secrets/{tenant}/{name}`: the value goes in and is forgotten by the page at once. */
async function putSecret(tenant: string, name: string, value: string): Promise<SecretInfo> {
  return api<SecretInfo>(secretPath(tenant, name), { method: 'PUT', body: JSON.stringify({ value }) });
}

export function Secrets() {
  const list = useLoad(() => api<SecretInfo[]>('/secrets'), []);
  return (
    <section aria-labelledby="secrets-title">
      <div className="page-head">
        <h1 id="secrets-title">Secrets</h1>
      </div>
      <p className="muted small">
        Values are write-only: berth never shows or returns them. Workspaces bind a secret by name when they are created; with
        placeholder delivery the real value only leaves berth's egress proxy, towards the bound hosts.
      </p>
      <Allowed need="manage">
        <SetSecret onSet={list.reload} />
      </Allowed>
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading secrets" />
      ) : list.data && list.data.length === 0 ? (
        <Empty>No secrets yet.</Empty>
      ) : list.data ? (
        <div className="table-wrap">
          <table className="table cards" data-testid="secrets-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Tenant</th>
                <th scope="col">Bound by</th>
                <th scope="col">Updated</th>
                <th scope="col"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((s) => (
                <SecretRow key={`${s.tenant}/${s.name}`} s={s} onChange={list.reload} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}

function SecretRow({ s, onChange }: { s: SecretInfo; onChange: () => void }) {
  const [rotating, setRotating] = useState(false);
  const [confirm, setConfirm] = useState(false);
  const [error, setError] = useState<string>();
  const remove = async () => {
    setError(undefined);
    try {
      await api(secretPath(s.tenant, s.name), { method: 'DELETE' });
      setConfirm(false);
      onChange();
    } catch (e) {
      setConfirm(false);
      setError((e as Error).message);
    }
  };
  return (
    <tr data-testid={`secret-${s.tenant}-${s.name}`}>
      <th scope="row" data-label="Name" className="mono wrap">
        {s.name}
      </th>
      <td data-label="Tenant">{s.tenant}</td>
      <td data-label="Bound by" className="wrap">
        {s.used_by.length === 0 ? (
          <span className="muted">no workspace</span>
        ) : (
          <ul className="plain" data-testid={`secret-bindings-${s.name}`}>
            {s.used_by.map((u) => (
              <li key={u.workspace}>
                {bindingLine(u)}
                {u.exposed && (
                  <span className="badge small warn" title="the real value is inside the workspace">
                    exposed
                  </span>
                )}
              </li>
            ))}
          </ul>
        )}
      </td>
      <td data-label="Updated" title={dateTime(s.updated_at)}>
        {age(s.updated_at)} ago
      </td>
      <td className="actions">
        <Allowed need="manage">
          {rotating ? (
            <ValueForm
              name={s.name}
              onCancel={() => setRotating(false)}
              onSave={async (value) => {
                await putSecret(s.tenant, s.name, value);
                setRotating(false);
                onChange();
              }}
            />
          ) : (
            <>
              <button type="button" className="btn small" onClick={() => setRotating(true)} data-testid={`secret-rotate-${s.name}`}>
                Set new value
              </button>
              <button type="button" className="btn small danger" onClick={() => setConfirm(true)} data-testid={`secret-delete-${s.name}`}>
                Delete
              </button>
            </>
          )}
          {confirm && (
            <Dialog open={confirm} title={`Delete secret ${s.name}?`} onClose={() => setConfirm(false)} testid="secret-delete-dialog">
              <p>
                {s.used_by.length
                  ? `Bound by ${s.used_by.map((u) => u.workspace).join(', ')}: their requests get no value from the next one on.`
                  : 'No workspace binds it.'}
              </p>
              <div className="row">
                <button type="button" className="btn danger" onClick={remove} data-testid="secret-delete-confirm">
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
          <span className="error-box" role="alert">
            {error}
          </span>
        )}
      </td>
    </tr>
  );
}

/** A value field on its own (rotate an existing secret). */
function ValueForm({ name, onSave, onCancel }: { name: string; onSave: (value: string) => Promise<void>; onCancel: () => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string>();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!value) return setError('Enter the new value.');
    try {
      await onSave(value);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setValue('');
    }
  };
  return (
    <form className="inline-form wrap" onSubmit={submit} aria-label={`New value of ${name}`}>
      <label className="sr-only" htmlFor={`secret-new-${name}`}>
        New value of {name}
      </label>
      <input
        id={`secret-new-${name}`}
        type="password"
        autoComplete="new-password"
        value={value}
        onChange={(e) => setValue(e.target.value)}
        data-testid={`secret-new-value-${name}`}
      />
      <button type="submit" className="btn small primary" data-testid={`secret-save-${name}`}>
        Save
      </button>
      <button type="button" className="btn small" onClick={onCancel}>
        Cancel
      </button>
      {error && (
        <span className="error-box" role="alert">
          {error}
        </span>
      )}
    </form>
  );
}

function SetSecret({ onSet }: { onSet: () => void }) {
  const me = useMe();
  const [tenant, setTenant] = useState('');
  const [name, setName] = useState('');
  const [value, setValue] = useState('');
  const [error, setError] = useState<string>();
  const [done, setDone] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    setDone(undefined);
    const t = (me?.tenant ?? tenant).trim();
    const n = name.trim();
    const bad = secretNameError(n) ?? (t ? undefined : 'Enter the tenant.') ?? (value ? undefined : 'Enter the value.');
    if (bad) return setError(bad);
    setBusy(true);
    try {
      const s = await putSecret(t, n, value);
      setDone(`Secret ${s.tenant}/${s.name} set.`);
      setName('');
      onSet();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      // The value is never kept, whatever the answer.
      setValue('');
      setBusy(false);
    }
  };
  return (
    <form className="card form-grid" onSubmit={submit} aria-label="Set a secret" data-testid="secret-form" autoComplete="off">
      {!me?.tenant && (
        <label>
          Tenant
          <input value={tenant} onChange={(e) => setTenant(e.target.value)} required data-testid="secret-tenant" />
        </label>
      )}
      <label>
        Name
        <input
          value={name}
          onChange={(e) => setName(e.target.value.toUpperCase())}
          placeholder="GITHUB_TOKEN"
          maxLength={SECRET_NAME_MAX}
          required
          autoCapitalize="characters"
          spellCheck={false}
          data-testid="secret-name"
        />
      </label>
      <label>
        Value
        <input type="password" autoComplete="new-password" value={value} onChange={(e) => setValue(e.target.value)} required data-testid="secret-value" />
      </label>
      {error && (
        <p className="error-box" role="alert">
          {error}
        </p>
      )}
      {done && (
        <p className="wide muted" role="status" data-testid="secret-done">
          {done}
        </p>
      )}
      <div className="wide">
        <button type="submit" className="btn primary" disabled={busy} data-testid="secret-set">
          {busy ? 'Saving…' : 'Set secret'}
        </button>
      </div>
    </form>
  );
}
