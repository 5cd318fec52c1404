// Notification subscriptions of the caller (admins: all): add (the signing secret is shown
// once; "this browser" subscribes it to Web Push), test, delivery log, remove; and the switch
// for browser notifications while berth is open.

import { useState, type FormEvent } from 'react';
import { api, post, type CreatedSubscription, type CreateSubscriptionRequest, type Delivery, type Subscription, type TestResult } from '../api';
import { dateTime } from '../format';
import { useAction, useLoad } from '../hooks';
import { browserNotificationsOn, browserNotificationsSupported, setBrowserNotifications } from '../notifications';
import { useMe } from '../roles';
import { Empty, ErrorBox, FormError, Loading, ShownOnce } from '../ui';
import { subscribeThisBrowser, webPushSupported } from '../webpush';

const KINDS = ['task.completed', 'task.failed', 'task.waiting', 'workspace.failed', 'workspace.oom', 'budget.near', 'budget.over', 'access.request'] as const;
type Kind = (typeof KINDS)[number];

export function Notifications() {
  const list = useLoad(() => api<Subscription[]>('/notifications/subscriptions'), []);
  const [created, setCreated] = useState<CreatedSubscription>();
  return (
    <section aria-labelledby="notify-title">
      <div className="page-head">
        <h1 id="notify-title">Notifications</h1>
      </div>
      <BrowserSwitch />
      <AddSubscription
        onCreated={(c) => {
          setCreated(c);
          list.reload();
        }}
      />
      {created?.signing_secret && (
        <ShownOnce value={created.signing_secret} testid="notify-created" valueTestid="notify-secret" onDone={() => setCreated(undefined)}>
          Subscription <strong>{created.subscription.id}</strong> created. Its signing secret verifies the{' '}
          <code>X-Berth-Signature</code> header; copy it now: it is shown only this once.
        </ShownOnce>
      )}
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading subscriptions" />
      ) : list.data && list.data.length === 0 ? (
        <Empty>No subscriptions yet.</Empty>
      ) : list.data ? (
        <div className="table-wrap">
          <table className="table cards" data-testid="notify-table">
            <thead>
              <tr>
                <th scope="col">Channel</th>
                <th scope="col">URL</th>
                <th scope="col">Scope</th>
                <th scope="col">Events</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((s) => (
                <SubscriptionRow key={s.id} s={s} onChange={list.reload} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}

function BrowserSwitch() {
  const [on, setOn] = useState(browserNotificationsOn);
  const [note, setNote] = useState<string>();
  if (!browserNotificationsSupported()) return <p className="muted">This browser has no notifications.</p>;
  const toggle = async () => {
    const want = !on;
    const now = await setBrowserNotifications(want);
    setOn(now);
    setNote(want && !now ? 'The browser did not allow notifications for this site.' : undefined);
  };
  return (
    <div className="card row">
      <label className="check">
        <input type="checkbox" checked={on} onChange={toggle} data-testid="notify-browser" /> Browser notifications (while berth is open)
      </label>
      {note && (
        <span className="error-box" role="alert">
          {note}
        </span>
      )}
    </div>
  );
}

function SubscriptionRow({ s, onChange }: { s: Subscription; onChange: () => void }) {
  const [test, setTest] = useState<TestResult>();
  const [log, setLog] = useState<Delivery[]>();
  const { busy, error, run } = useAction();
  const path = `/notifications/subscriptions/${encodeURIComponent(s.id)}`;
  return (
    <>
      <tr data-testid={`notify-${s.id}`}>
        <th scope="row" data-label="Channel" title={s.id}>
          {s.channel}
        </th>
        <td data-label="URL" className="wrap">
          {s.url}
        </td>
        <td data-label="Scope">{s.workspace ?? s.tenant}</td>
        <td data-label="Events" className="wrap">
          {s.kinds.length ? s.kinds.join(', ') : 'all'}
        </td>
        <td className="actions">
          <button type="button" className="btn small" disabled={busy} data-testid={`notify-test-${s.id}`}
            onClick={() => run(async () => setTest(await post<TestResult>(`${path}/test`)))}>
            Test
          </button>
          <button type="button" className="btn small" disabled={busy} data-testid={`notify-log-${s.id}`}
            onClick={() => run(async () => setLog(log ? undefined : await api<Delivery[]>(`${path}/deliveries`)))}>
            {log ? 'Hide log' : 'Log'}
          </button>
          <button type="button" className="btn small danger" disabled={busy} data-testid={`notify-remove-${s.id}`}
            onClick={() => run(async () => {
              await api(path, { method: 'DELETE' });
              onChange();
            })}>
            Remove
          </button>
          {test && (
            <span role="status" data-testid={`notify-test-result-${s.id}`}>
              {test.delivered ? `delivered (${test.status})` : `not delivered: ${test.status ?? test.error ?? 'no answer'}`}
            </span>
          )}
          {error && (
            <span className="error-box" role="alert">
              {error}
            </span>
          )}
        </td>
      </tr>
      {log && (
        <tr>
          <td colSpan={5}>
            {log.length === 0 ? (
              <p className="muted">No deliveries yet.</p>
            ) : (
              <ul className="plain" data-testid={`notify-deliveries-${s.id}`}>
                {log.map((d) => (
                  <li key={d.id}>
                    <strong>{d.kind}</strong> · {d.state} · {d.attempts} attempt{d.attempts === 1 ? '' : 's'}
                    <ul className="plain small">
                      {d.log.map((a, i) => (
                        <li key={i}>
                          {dateTime(a.at)}: {a.status ?? a.error ?? '—'} ({a.duration_ms} ms)
                          {a.next_at ? `, next ${dateTime(a.next_at)}` : ''}
                        </li>
                      ))}
                    </ul>
                  </li>
                ))}
              </ul>
            )}
          </td>
        </tr>
      )}
    </>
  );
}

function AddSubscription({ onCreated }: { onCreated: (c: CreatedSubscription) => void }) {
  const me = useMe();
  const [channel, setChannel] = useState<string>('webhook');
  const [url, setUrl] = useState('');
  const [tenant, setTenant] = useState('');
  const [workspace, setWorkspace] = useState('');
  const [kinds, setKinds] = useState<Kind[]>([]);
  const { busy, error, run } = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    return run(async () => {
      // This browser: its push service's endpoint and keys, from a fresh (or kept) subscription.
      const target = channel === 'webpush' ? await subscribeThisBrowser() : { url: url.trim() };
      const body: CreateSubscriptionRequest = { channel, ...target };
      if (workspace.trim()) body.workspace = workspace.trim();
      else if (!me?.tenant && tenant.trim()) body.tenant = tenant.trim();
      if (kinds.length) body.kinds = kinds;
      onCreated(await post<CreatedSubscription>('/notifications/subscriptions', body));
      setUrl('');
    });
  };
  return (
    <form className="card form-grid" onSubmit={submit} aria-label="New subscription" data-testid="notify-form">
      <label>
        Channel
        <select value={channel} onChange={(e) => setChannel(e.target.value)} data-testid="notify-channel">
          <option value="webhook">Webhook (signed JSON)</option>
          <option value="slack">Slack incoming webhook</option>
          <option value="ntfy">ntfy topic</option>
          {webPushSupported() && <option value="webpush">This browser (push, also when berth is closed)</option>}
        </select>
      </label>
      {channel !== 'webpush' && (
        <label>
          URL
          <input type="url" value={url} onChange={(e) => setUrl(e.target.value)} required maxLength={2048} placeholder="https://…" data-testid="notify-url" />
        </label>
      )}
      {!me?.tenant && (
        <label>
          Tenant
          <input value={tenant} onChange={(e) => setTenant(e.target.value)} placeholder="or a workspace below" data-testid="notify-tenant" />
        </label>
      )}
      <label>
        Workspace (optional)
        <input value={workspace} onChange={(e) => setWorkspace(e.target.value)} placeholder="all of the tenant's" data-testid="notify-workspace" />
      </label>
      <fieldset>
        <legend>Events (none ticked: all)</legend>
        {KINDS.map((k) => (
          <label key={k} className="check">
            <input type="checkbox" checked={kinds.includes(k)}
              onChange={(e) => setKinds(e.target.checked ? [...kinds, k] : kinds.filter((x) => x !== k))} />{' '}
            {k}
          </label>
        ))}
      </fieldset>
      <FormError error={error} />
      <button type="submit" className="btn primary" disabled={busy} data-testid="notify-create">
        {busy ? 'Adding…' : 'Add subscription'}
      </button>
    </form>
  );
}
