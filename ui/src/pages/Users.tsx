import { useState } from 'react';
import { api, post, type User } from '../api';
import { age, dateTime } from '../format';
import { useLoad } from '../hooks';
import { Empty, ErrorBox, Loading } from '../ui';

/** People known from single sign-on: admins see everyone, owners their tenant's. Disabling ends
 * the user's sessions at once. */
export function Users() {
  const u = useLoad(() => api<User[]>('/users'), []);
  const [busy, setBusy] = useState<string>();
  const [error, setError] = useState<string>();
  const toggle = async (user: User) => {
    setBusy(user.id);
    setError(undefined);
    try {
      await post<User>(`/users/${encodeURIComponent(user.id)}/${user.disabled ? 'enable' : 'disable'}`);
      u.reload();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(undefined);
    }
  };
  return (
    <section aria-labelledby="users-title">
      <div className="page-head">
        <h1 id="users-title">Users</h1>
        <button type="button" className="btn small" onClick={u.reload}>Refresh</button>
      </div>
      <p className="muted small">People who signed in with single sign-on. Role and tenant come from the identity provider at each login; disabling ends their sessions.</p>
      <ErrorBox error={error ?? u.error} onRetry={u.reload} />
      {u.loading && !u.data ? (
        <Loading what="Loading users" />
      ) : u.data && u.data.length === 0 ? (
        <Empty>Nobody has signed in with single sign-on yet.</Empty>
      ) : (
        u.data && (
          <div className="table-wrap">
            <table className="table cards" data-testid="users-table">
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Tenant</th>
                  <th scope="col">Role</th>
                  <th scope="col">Last login</th>
                  <th scope="col">State</th>
                </tr>
              </thead>
              <tbody>
                {u.data.map((user) => (
                  <tr key={user.id} data-testid={`user-${user.id}`} className={user.disabled ? 'denied' : ''}>
                    <td data-label="Name">
                      {user.name}
                      {user.email && <div className="muted small">{user.email}</div>}
                    </td>
                    <td data-label="Tenant">{user.tenant ?? '*'}</td>
                    <td data-label="Role"><code>{user.role}</code></td>
                    <td data-label="Last login" title={user.last_login_at ? dateTime(user.last_login_at) : undefined}>
                      {user.last_login_at ? `${age(user.last_login_at)} ago` : '—'}
                    </td>
                    <td data-label="State">
                      <span className={`badge ${user.disabled ? 'state-failed' : 'state-completed'}`} data-testid="user-state">
                        {user.disabled ? 'disabled' : 'active'}
                      </span>{' '}
                      <button type="button" className="btn small" disabled={busy === user.id} onClick={() => toggle(user)} data-testid="user-toggle">
                        {user.disabled ? 'Enable' : 'Disable'}
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )
      )}
    </section>
  );
}
