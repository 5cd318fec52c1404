import { useEffect, useState, type FormEvent } from 'react';
import { AGENTS, APPROVAL_POLICIES, api, post, type CreateTaskRequest, type Task, type Workspace } from '../api';
import { navigate, useLoad } from '../hooks';
import { Empty, ErrorBox, Loading } from '../ui';

export function NewTask({ query }: { query: URLSearchParams }) {
  const wss = useLoad(() => api<Workspace[]>('/workspaces'), []);
  const pre = query.get('workspace') ?? '';
  const [f, setF] = useState({ workspace: pre, agent: 'claude', model: '', dir: '', worktree: '', prompt: '', approval: '' });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const running = (wss.data ?? []).filter((w) => w.state === 'running');
  useEffect(() => {
    if (!f.workspace && running.length > 0) setF((x) => ({ ...x, workspace: `${running[0].tenant}/${running[0].name}` }));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [wss.data]);
  const set = (k: keyof typeof f) => (e: { target: { value: string } }) => setF({ ...f, [k]: e.target.value });
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!f.prompt.trim()) {
      setError('The prompt must not be empty.');
      return;
    }
    setBusy(true);
    setError(undefined);
    const body: CreateTaskRequest = { workspace: f.workspace, agent: f.agent as CreateTaskRequest['agent'], prompt: f.prompt };
    for (const k of ['model', 'dir', 'worktree', 'approval'] as const) if (f[k].trim()) body[k] = f[k].trim();
    try {
      const t = await post<Task>('/tasks', body);
      navigate(`/tasks/${encodeURIComponent(t.id)}`);
    } catch (err) {
      setError((err as Error).message);
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="nt-title">
      <h1 id="nt-title">New task</h1>
      <ErrorBox error={wss.error} onRetry={wss.reload} />
      {wss.loading && !wss.data ? (
        <Loading what="Loading workspaces" />
      ) : running.length === 0 && !pre ? (
        <Empty>
          No running workspace. <a href="#/workspaces">Create or start one</a> first.
        </Empty>
      ) : (
        <form className="card form-grid" onSubmit={submit}>
          <div className="field">
            <label htmlFor="nt-ws">Workspace</label>
            <select id="nt-ws" value={f.workspace} onChange={set('workspace')} required data-testid="task-new-workspace">
              {running.map((w) => (
                <option key={w.id} value={`${w.tenant}/${w.name}`}>
                  {w.tenant}/{w.name}
                </option>
              ))}
              {f.workspace && !running.some((w) => `${w.tenant}/${w.name}` === f.workspace) && (
                <option value={f.workspace}>{f.workspace} (not running)</option>
              )}
            </select>
          </div>
          <div className="field">
            <label htmlFor="nt-agent">Agent</label>
            <select id="nt-agent" value={f.agent} onChange={set('agent')} data-testid="task-new-agent">
              {AGENTS.map((a) => (
                <option key={a} value={a}>
                  {a}
                </option>
              ))}
            </select>
          </div>
          <div className="field">
            <label htmlFor="nt-approval">Approvals</label>
            <select id="nt-approval" value={f.approval} onChange={set('approval')} data-testid="task-new-approval">
              <option value="">the workspace's default</option>
              {APPROVAL_POLICIES.map((p) => (
                <option key={p} value={p}>
                  {p === 'never' ? 'never (unattended)' : p === 'on-request' ? 'on request (the agent asks)' : 'always (every action asks)'}
                </option>
              ))}
            </select>
          </div>
          <div className="field">
            <label htmlFor="nt-model">Model (optional)</label>
            <input id="nt-model" value={f.model} onChange={set('model')} placeholder="agent default" data-testid="task-new-model" />
          </div>
          <div className="field">
            <label htmlFor="nt-dir">Directory (optional)</label>
            <input id="nt-dir" value={f.dir} onChange={set('dir')} placeholder="/home/agent" data-testid="task-new-dir" />
          </div>
          <div className="field">
            <label htmlFor="nt-wt">Worktree branch (optional)</label>
            <input id="nt-wt" value={f.worktree} onChange={set('worktree')} placeholder="e.g. fix-42 (needs a git repo in the directory)" data-testid="task-new-worktree" />
          </div>
          <div className="field wide">
            <label htmlFor="nt-prompt">Prompt</label>
            <textarea id="nt-prompt" rows={6} value={f.prompt} onChange={set('prompt')} required data-testid="task-new-prompt"
              onKeyDown={(e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) (e.currentTarget.form as HTMLFormElement).requestSubmit(); }} />
            <small className="muted">Ctrl+Enter to start.</small>
          </div>
          <ErrorBox error={error} />
          <div className="row wide">
            <button type="submit" className="btn primary" disabled={busy || !f.workspace} data-testid="task-new-submit">
              {busy ? 'Starting…' : 'Start task'}
            </button>
          </div>
        </form>
      )}
    </section>
  );
}
