// Tokens of the tenant (owners) or of the server (admins): create (the token is shown once),
// list, revoke.

import { useState, type FormEvent } from 'react';
import { api, post, type CreatedToken, type CreateTokenRequest, type TokenInfo } from '../api';
import { age, dateTime } from '../format';
import { useAction, useLoad } from '../hooks';
import { grantable, useMe } from '../roles';
import { Empty, ErrorBox, FormError, Loading, ShownOnce } from '../ui';

export function Tokens() {
  const list = useLoad(() => api<TokenInfo[]>('/tokens'), []);
  const [created, setCreated] = useState<CreatedToken>();
  return (
    <section aria-labelledby="tokens-title">
      <div className="page-head">
        <h1 id="tokens-title">Tokens</h1>
      </div>
      <CreateToken
        onCreated={(t) => {
          setCreated(t);
          list.reload();
        }}
      />
      {created && (
        <ShownOnce value={created.token} testid="token-created" valueTestid="token-value" onDone={() => setCreated(undefined)}>
          Token <strong>{created.name}</strong> created. Copy it now: it is shown only this once.
        </ShownOnce>
      )}
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading tokens" />
      ) : list.data && list.data.length === 0 ? (
        <Empty>No tokens.</Empty>
      ) : list.data ? (
        <div className="table-wrap">
          <table className="table cards" data-testid="tokens-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Tenant</th>
                <th scope="col">Expires</th>
                <th scope="col">Last used</th>
                <th scope="col"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((t) => (
                <TokenRow key={t.id} t={t} onChange={list.reload} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}

function TokenRow({ t, onChange }: { t: TokenInfo; onChange: () => void }) {
  const me = useMe();
  const [error, setError] = useState<string>();
  const revoke = async () => {
    setError(undefined);
    try {
      await api(`/tokens/${encodeURIComponent(t.id)}`, { method: 'DELETE' });
      onChange();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  const mayRevoke = !t.revoked_at && grantable(me).includes(t.role as never) && t.id !== me?.token_id;
  return (
    <tr data-testid={`token-${t.name}`}>
      <th scope="row" data-label="Name" title={t.id}>
        {t.name}
      </th>
      <td data-label="Role">{t.role}</td>
      <td data-label="Tenant">{t.tenant ?? 'all'}</td>
      <td data-label="Expires" title={t.expires_at ? dateTime(t.expires_at) : undefined}>
        {t.revoked_at ? 'revoked' : t.expires_at ? dateTime(t.expires_at) : 'never'}
      </td>
      <td data-label="Last used">{t.last_used_at ? `${age(t.last_used_at)} ago` : 'never'}</td>
      <td className="actions">
        {mayRevoke && (
          <button type="button" className="btn small danger" onClick={revoke} data-testid={`token-revoke-${t.name}`}>
            Revoke
          </button>
        )}
        {error && <span className="error-box" role="alert">{error}</span>}
      </td>
    </tr>
  );
}

function CreateToken({ onCreated }: { onCreated: (t: CreatedToken) => void }) {
  const me = useMe();
  const roles = grantable(me);
  const [name, setName] = useState('');
  const [role, setRole] = useState('member');
  const [tenant, setTenant] = useState(me?.tenant ?? '');
  const [expires, setExpires] = useState('30d');
  const { busy, error, run } = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const body: CreateTokenRequest = { name: name.trim(), role: role as CreateTokenRequest['role'] };
    if (role !== 'admin') body.tenant = (me?.tenant ?? tenant).trim();
    if (expires.trim()) body.expires_in = expires.trim();
    return run(async () => {
      onCreated(await post<CreatedToken>('/tokens', body));
      setName('');
    });
  };
  return (
    <form className="card form-grid" onSubmit={submit} aria-label="New token" data-testid="token-form">
      <label>
        Name
        <input value={name} onChange={(e) => setName(e.target.value)} required maxLength={64} data-testid="token-name" />
      </label>
      <label>
        Role
        <select value={role} onChange={(e) => setRole(e.target.value)} data-testid="token-role">
          {roles.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
      </label>
      {!me?.tenant && role !== 'admin' && (
        <label>
          Tenant
          <input value={tenant} onChange={(e) => setTenant(e.target.value)} required data-testid="token-tenant" />
        </label>
      )}
      <label>
        Expires in
        <input value={expires} onChange={(e) => setExpires(e.target.value)} placeholder="30d, 12h (empty: never)" data-testid="token-expires" />
      </label>
      <FormError error={error} />
      <button type="submit" className="btn primary" disabled={busy} data-testid="token-create">
        {busy ? 'Creating…' : 'Create token'}
      </button>
    </form>
  );
}
