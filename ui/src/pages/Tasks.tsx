import { api, TASK_STATES, type Task, type Workspace } from '../api';
import { age, dateTime, num, usd, usdExact } from '../format';
import { navigate, useLoad } from '../hooks';
import { Empty, ErrorBox, Loading, StateBadge } from '../ui';

export function Tasks({ query }: { query: URLSearchParams }) {
  const workspace = query.get('workspace') ?? '';
  const state = query.get('state') ?? '';
  const qs = new URLSearchParams();
  if (workspace) qs.set('workspace', workspace);
  if (state) qs.set('state', state);
  const q = qs.toString();
  const tasks = useLoad(() => api<Task[]>(`/tasks${q ? `?${q}` : ''}`), [q], 3000);
  const wss = useLoad(() => api<Workspace[]>('/workspaces'), []);
  const setFilter = (k: string, v: string) => {
    const n = new URLSearchParams(qs);
    if (v) n.set(k, v);
    else n.delete(k);
    const s = n.toString();
    navigate(`/tasks${s ? `?${s}` : ''}`);
  };
  return (
    <section aria-labelledby="tasks-title">
      <div className="page-head">
        <h1 id="tasks-title">Tasks</h1>
        <a className="btn primary" href="#/tasks/new" data-testid="task-new-link">
          New task
        </a>
      </div>
      <form className="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter tasks">
        <div className="field">
          <label htmlFor="f-ws">Workspace</label>
          <select id="f-ws" value={workspace} onChange={(e) => setFilter('workspace', e.target.value)} data-testid="tasks-filter-workspace">
            <option value="">All workspaces</option>
            {wss.data?.map((w) => (
              <option key={w.id} value={`${w.tenant}/${w.name}`}>
                {w.tenant}/{w.name}
              </option>
            ))}
            {workspace && !wss.data?.some((w) => `${w.tenant}/${w.name}` === workspace) && <option value={workspace}>{workspace}</option>}
          </select>
        </div>
        <div className="field">
          <label htmlFor="f-state">State</label>
          <select id="f-state" value={state} onChange={(e) => setFilter('state', e.target.value)} data-testid="tasks-filter-state">
            <option value="">All states</option>
            {TASK_STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
      </form>
      <ErrorBox error={tasks.error} onRetry={tasks.reload} />
      {tasks.loading && !tasks.data ? (
        <Loading what="Loading tasks" />
      ) : tasks.data && tasks.data.length === 0 ? (
        <Empty>{q ? 'No tasks match these filters.' : 'No tasks yet. Start one with “New task”.'}</Empty>
      ) : (
        tasks.data && <TaskTable tasks={tasks.data} showWorkspace />
      )}
    </section>
  );
}

export function TaskTable({ tasks, showWorkspace }: { tasks: Task[]; showWorkspace: boolean }) {
  const sorted = [...tasks].sort((a, b) => b.created_at.localeCompare(a.created_at));
  return (
    <div className="table-wrap">
      <table className="table cards" data-testid="tasks-table">
        <thead>
          <tr>
            <th scope="col">Task</th>
            {showWorkspace && <th scope="col">Workspace</th>}
            <th scope="col">State</th>
            <th scope="col">Agent</th>
            <th scope="col">Age</th>
            <th scope="col">Tokens in/out</th>
          </tr>
        </thead>
        <tbody>
          {sorted.map((t) => (
            <tr key={t.id} data-testid={`task-row-${t.id}`} data-state={t.state}>
              <td data-label="Task">
                <a href={`#/tasks/${encodeURIComponent(t.id)}`} className="strong">
                  {t.prompt.length > 80 ? `${t.prompt.slice(0, 80)}…` : t.prompt || t.id}
                </a>
                <div className="muted small mono">{t.id}</div>
              </td>
              {showWorkspace && (
                <td data-label="Workspace">
                  {t.workspace_removed
                    ? <span className="muted" title="that workspace was removed; one created since under its name is another">{t.workspace} (removed)</span>
                    : <a href={`#/workspaces/${encodeURIComponent(t.workspace)}`}>{t.workspace}</a>}
                </td>
              )}
              <td data-label="State">
                <StateBadge state={t.state} />
                {t.reason && <div className="muted small">{t.reason}</div>}
              </td>
              <td data-label="Agent">
                {t.agent}
                {t.model && <span className="muted small"> · {t.model}</span>}
              </td>
              <td data-label="Age" title={dateTime(t.created_at)}>
                {age(t.created_at)}
              </td>
              <td data-label="Tokens in/out" className="nowrap">
                {num(t.usage.input_tokens)} / {num(t.usage.output_tokens)}
                {t.usage.cost ? <span className="muted small"> · {usdExact(t.usage.cost, t.usage.fallback_calls)}</span> : t.usage.cost_usd != null && <span className="muted small"> · {usd(t.usage.cost_usd)}</span>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
