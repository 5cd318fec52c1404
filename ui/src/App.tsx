import { useEffect, useState, type FormEvent } from 'react';
import { apiFetch, getToken, onUnauthorized, setToken, type WhoAmI } from './api';
import { useRoute } from './hooks';
import { Workspaces } from './pages/Workspaces';
import { WorkspaceDetail } from './pages/WorkspaceDetail';
import { TerminalPage } from './pages/Terminal';
import { Tasks } from './pages/Tasks';
import { NewTask } from './pages/NewTask';
import { TaskDetail } from './pages/TaskDetail';
import { Audit } from './pages/Audit';
import { UsagePage } from './pages/Usage';

const NAV = [
  ['/workspaces', 'Workspaces'],
  ['/tasks', 'Tasks'],
  ['/tasks/new', 'New task'],
  ['/usage', 'Usage'],
  ['/audit', 'Audit'],
] as const;

export function App() {
  const [token, setTok] = useState(getToken());
  useEffect(
    () =>
      onUnauthorized(() => {
        setToken(null);
        setTok(null);
      }),
    [],
  );
  if (!token) return <SignIn onSignedIn={(t) => setTok(t)} />;
  return (
    <Shell
      onSignOut={() => {
        setToken(null);
        setTok(null);
      }}
    />
  );
}

function SignIn({ onSignedIn }: { onSignedIn: (t: string) => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
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
      setToken(t);
      onSignedIn(t);
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
        <p className="muted">Sign in with an API token (for example the admin token printed by <code>scripts/up</code>).</p>
        <label htmlFor="signin-token">API token</label>
        <input
          id="signin-token"
          data-testid="signin-token"
          type="password"
          autoComplete="current-password"
          value={value}
          onChange={(e) => setValue(e.target.value)}
          autoFocus
          required
        />
        {error && (
          <p className="error-box" role="alert" data-testid="signin-error">
            {error}
          </p>
        )}
        <button type="submit" className="btn primary" data-testid="signin-submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p className="muted small">The token stays in this browser tab only (session storage).</p>
      </form>
    </main>
  );
}

function Shell({ onSignOut }: { onSignOut: () => void }) {
  const { path, query } = useRoute();
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
  else if (path === '/audit') page = <Audit />;
  else if (path === '/usage') page = <UsagePage />;
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
    <>
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
            {NAV.map(([href, label]) => (
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
            <span className="muted small" title={`token ${me.token_id}, server ${me.server_version}`}>
              {me.token_name} ({me.role})
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
    </>
  );
}
