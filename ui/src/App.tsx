import { useEffect, useState, type FormEvent } from 'react';
import { apiFetch, getToken, isRememberedDevice, onUnauthorized, post, setToken, type AuthConfig, type CreatedToken, type SessionInfo, type WhoAmI } from './api';
import { acceptSession, setCsrfToken, signInOptions, type SignInOptions } from './auth';
import { useRoute } from './hooks';
import { Workspaces } from './pages/Workspaces';
import { WorkspaceDetail } from './pages/WorkspaceDetail';
import { TerminalPage } from './pages/Terminal';
import { Tasks } from './pages/Tasks';
import { NewTask } from './pages/NewTask';
import { TaskDetail } from './pages/TaskDetail';
import { Audit } from './pages/Audit';
import { UsagePage } from './pages/Usage';
import { Users } from './pages/Users';
import { Tokens } from './pages/Tokens';
import { Tenants } from './pages/Tenants';
import { Secrets } from './pages/Secrets';
import { Budgets } from './pages/Budgets';
import { EgressTemplates } from './pages/EgressTemplates';
import { Inbox } from './pages/Inbox';
import { Notifications } from './pages/Notifications';
import { useBrowserNotifications } from './notifications';
import { describe, MeContext, navFor } from './roles';

/** How this tab is signed in: a bearer token, a single sign-on cookie session, or not yet. */
type Auth = { kind: 'token' } | { kind: 'session'; info: SessionInfo } | null;

export function App() {
  const [auth, setAuth] = useState<Auth | 'checking'>(() => (getToken() ? { kind: 'token' } : 'checking'));
  useEffect(
    () =>
      onUnauthorized(() => {
        setToken(null);
        setCsrfToken(null);
        setAuth(null);
      }),
    [],
  );
  useEffect(() => {
    if (auth !== 'checking') return;
    // A single sign-on session is an HttpOnly cookie the page cannot see: ask the server.
    apiFetch('/auth/session', {}, null)
      .then((r) => r.json())
      .then(
        (info: SessionInfo) => setAuth(info.kind === 'session' ? { kind: 'session', info: acceptSession(info) } : null),
        () => setAuth(null),
      );
  }, [auth]);
  if (auth === 'checking')
    return (
      <main className="signin">
        <p className="muted">Loading…</p>
      </main>
    );
  if (!auth) return <SignIn onSignedIn={() => setAuth({ kind: 'token' })} />;
  return (
    <Shell
      onSignOut={async () => {
        if (auth.kind === 'session' || isRememberedDevice()) {
          // Ends the session server-side (the old cookie is worthless afterwards), or revokes
          // this device's own token.
          await post('/auth/logout').catch(() => {});
        }
        setToken(null);
        setCsrfToken(null);
        setAuth(null);
      }}
    />
  );
}

function SignIn({ onSignedIn }: { onSignedIn: () => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const [remember, setRemember] = useState(false);
  const [options, setOptions] = useState<SignInOptions>();
  useEffect(() => {
    fetch('/api/v1/auth/config')
      .then((r) => (r.ok ? (r.json() as Promise<AuthConfig>) : null))
      .catch(() => null)
      .then((c) => setOptions(signInOptions(c)));
  }, []);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const t = value.trim();
    if (!t) {
      setError('Enter the API token.');
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      const res = await apiFetch('/whoami', {}, t);
      (await res.json()) as WhoAmI;
      if (remember) {
        // The browser keeps a token of its own (revocable, 30 days at most), never the pasted one.
        const dev = await apiFetch('/auth/device', { method: 'POST' }, t);
        setToken(((await dev.json()) as CreatedToken).token, true);
      } else setToken(t);
      onSignedIn();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="signin">
      <form onSubmit={submit} className="card" aria-labelledby="signin-title">
        <h1 id="signin-title">
          <span className="logo" aria-hidden="true">⚓</span> berth
        </h1>
        {options?.sso && (
          <>
            <a className="btn primary sso" href={options.sso.loginUrl} data-testid="signin-sso">
              Sign in with SSO
            </a>
            {options.token && <p className="muted small or">or with an API token</p>}
          </>
        )}
        {options && options.token && (
          <>
            {!options.sso && (
              <p className="muted">Sign in with an API token (for example the admin token printed by <code>scripts/up</code>).</p>
            )}
            <label htmlFor="signin-token">API token</label>
            <input
              id="signin-token"
              data-testid="signin-token"
              type="password"
              autoComplete="current-password"
              value={value}
              onChange={(e) => setValue(e.target.value)}
              autoFocus={!options.sso}
              required
            />
            {error && (
              <p className="error-box" role="alert" data-testid="signin-error">
                {error}
              </p>
            )}
            <button type="submit" className={options.sso ? 'btn' : 'btn primary'} data-testid="signin-submit" disabled={busy}>
              {busy ? 'Signing in…' : 'Sign in'}
            </button>
            <label className="check">
              <input type="checkbox" checked={remember} onChange={(e) => setRemember(e.target.checked)} data-testid="signin-remember" />
              Remember this device for 30 days
            </label>
            <p className="muted small">
              {remember
                ? 'This browser gets a token of its own (listed under Tokens; signing out or revoking your token ends it); the token you paste is not stored.'
                : 'The token stays in this browser tab only (session storage).'}
            </p>
          </>
        )}
      </form>
    </main>
  );
}

function Shell({ onSignOut }: { onSignOut: () => void }) {
  const { path, query } = useRoute();
  // Browser notifications, when switched on (Notifications page), while any page is open.
  useBrowserNotifications();
  const [me, setMe] = useState<WhoAmI>();
  useEffect(() => {
    apiFetch('/whoami')
      .then((r) => r.json())
      .then(setMe, () => {});
  }, []);

  let page;
  let m: RegExpMatchArray | null;
  if (path === '/' || path === '/workspaces') page = <Workspaces />;
  else if ((m = path.match(/^\/workspaces\/([^/]+)\/terminal\/([^/]+)$/)))
    page = <TerminalPage ws={decodeURIComponent(m[1])} session={decodeURIComponent(m[2])} />;
  else if ((m = path.match(/^\/workspaces\/([^/]+)$/))) page = <WorkspaceDetail ws={decodeURIComponent(m[1])} />;
  else if (path === '/tasks') page = <Tasks query={query} />;
  else if (path === '/tasks/new') page = <NewTask query={query} />;
  else if ((m = path.match(/^\/tasks\/([^/]+)$/))) page = <TaskDetail id={decodeURIComponent(m[1])} tab={query.get('tab') || 'timeline'} />;
  else if (path === '/inbox') page = <Inbox />;
  else if (path === '/audit') page = <Audit />;
  else if (path === '/usage') page = <UsagePage />;
  else if (path === '/users') page = <Users />;
  else if (path === '/tokens') page = <Tokens />;
  else if (path === '/tenants') page = <Tenants />;
  else if (path === '/secrets') page = <Secrets />;
  else if (path === '/budgets') page = <Budgets />;
  else if (path === '/egress') page = <EgressTemplates />;
  else if (path === '/notifications') page = <Notifications />;
  else
    page = (
      <section>
        <h1>Not found</h1>
        <p>
          No page at <code>{path}</code>. <a href="#/workspaces">Go to workspaces</a>.
        </p>
      </section>
    );

  const active = (href: string) =>
    href === '/tasks' ? path === '/tasks' || (/^\/tasks\/[^/]+$/.test(path) && path !== '/tasks/new') : path === href || (href === '/workspaces' && (path === '/' || path.startsWith('/workspaces/')));

  return (
    <MeContext.Provider value={me}>
      <a className="skip" href="#main" onClick={(e) => {
        e.preventDefault();
        document.getElementById('main')?.focus();
      }}>
        Skip to content
      </a>
      <header className="topbar">
        <a href="#/workspaces" className="brand">
          <span className="logo" aria-hidden="true">⚓</span> berth
        </a>
        <nav aria-label="Main">
          <ul>
            {navFor(me).map(([href, label]) => (
              <li key={href}>
                <a href={`#${href}`} aria-current={active(href) ? 'page' : undefined} data-testid={`nav-${label.toLowerCase().replace(' ', '-')}`}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div className="who">
          {me && (
            <span
              className="muted small whoami"
              data-testid="whoami"
              title={`token ${me.token_id}${me.expires_at ? `, expires ${me.expires_at}` : ''}, server ${me.server_version}`}
            >
              {describe(me)}
            </span>
          )}
          <button type="button" className="btn small" onClick={onSignOut} data-testid="signout">
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </MeContext.Provider>
  );
}
