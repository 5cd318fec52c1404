// LLM budgets of tenants and workspaces with what is spent in the current period. Owners set
// (replace) and remove them; everyone else reads.

import { useState, type FormEvent } from 'react';
import { api, type Budget, type Workspace } from '../api';
import { num, usd } from '../format';
import { BUDGET_PERIODS, budgetBody, budgetShare, budgetTargetQuery, type BudgetForm } from '../governance';
import { useLoad } from '../hooks';
import { Allowed, useCan, useMe } from '../roles';
import { Empty, ErrorBox, Loading } from '../ui';

const key = (b: Pick<Budget, 'scope' | 'target'>) => `${b.scope}-${b.target.replace('/', '-')}`;

export function Budgets() {
  const list = useLoad(() => api<Budget[]>('/budgets'), [], 15000);
  const [editing, setEditing] = useState<Budget>();
  return (
    <section aria-labelledby="budgets-title">
      <div className="page-head">
        <h1 id="budgets-title">Budgets</h1>
      </div>
      <p className="muted small">
        Limits on LLM tokens and cost through berth's gateway, per tenant or workspace, for a day, a month or in total. A call
        past a budget is refused and the task ends <code>failed</code>.
      </p>
      <Allowed need="manage">
        <SetBudgetForm
          key={editing ? key(editing) : 'new'}
          initial={editing}
          onSet={() => {
            setEditing(undefined);
            list.reload();
          }}
        />
      </Allowed>
      <ErrorBox error={list.error} onRetry={list.reload} />
      {list.loading && !list.data ? (
        <Loading what="Loading budgets" />
      ) : list.data && list.data.length === 0 ? (
        <Empty>No budgets: LLM use is unlimited.</Empty>
      ) : list.data ? (
        <div className="table-wrap">
          <table className="table cards" data-testid="budgets-table">
            <thead>
              <tr>
                <th scope="col">Target</th>
                <th scope="col">Period</th>
                <th scope="col">Tokens</th>
                <th scope="col">Cost</th>
                <th scope="col">Spent</th>
                <th scope="col"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((b) => (
                <BudgetRow key={key(b)} b={b} onEdit={() => setEditing(b)} onChange={list.reload} />
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}

function BudgetRow({ b, onEdit, onChange }: { b: Budget; onEdit: () => void; onChange: () => void }) {
  const [error, setError] = useState<string>();
  const share = budgetShare(b);
  const remove = async () => {
    setError(undefined);
    try {
      await api(`/budgets${budgetTargetQuery(b)}`, { method: 'DELETE' });
      onChange();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <tr data-testid={`budget-${key(b)}`}>
      <th scope="row" data-label="Target" className="wrap">
        <span className="badge small">{b.scope}</span> {b.target}
      </th>
      <td data-label="Period">{b.period}</td>
      <td data-label="Tokens" data-testid="budget-tokens-cell">
        {num(b.spent_tokens)} / {b.max_tokens === undefined || b.max_tokens === null ? '∞' : num(b.max_tokens)}
      </td>
      <td data-label="Cost" data-testid="budget-cost-cell">
        {usd(b.spent_cost_usd)} / {b.max_cost_usd === undefined || b.max_cost_usd === null ? '∞' : usd(b.max_cost_usd)}
      </td>
      <td data-label="Spent">
        <div className="meter" role="meter" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(Math.min(share, 1) * 100)} aria-label="share spent">
          <span className={share >= 0.8 ? 'hot' : undefined} style={{ width: `${Math.min(share, 1) * 100}%` }} />
        </div>
        <span className="small muted">{Number.isFinite(share) ? `${Math.round(share * 100)}%` : 'over'}</span>
      </td>
      <td className="actions">
        <Allowed need="manage">
          <button type="button" className="btn small" onClick={onEdit} data-testid={`budget-edit-${key(b)}`}>
            Edit
          </button>
          <button type="button" className="btn small danger" onClick={remove} data-testid={`budget-remove-${key(b)}`}>
            Remove
          </button>
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

function SetBudgetForm({ initial, onSet }: { initial?: Budget; onSet: () => void }) {
  const me = useMe();
  const canManage = useCan('manage');
  const [f, setF] = useState<BudgetForm>(() => ({
    scope: initial?.scope === 'workspace' ? 'workspace' : 'tenant',
    target: initial?.target ?? me?.tenant ?? '',
    period: initial?.period ?? 'day',
    tokens: initial?.max_tokens?.toString() ?? '',
    cost: initial?.max_cost_usd?.toString() ?? '',
  }));
  const workspaces = useLoad(() => (canManage ? api<Workspace[]>('/workspaces') : Promise.resolve([])), [canManage]);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const set = (k: keyof BudgetForm) => (e: { target: { value: string } }) => setF((f) => ({ ...f, [k]: e.target.value }));
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(undefined);
    const r = budgetBody(f);
    if ('error' in r) return setError(r.error);
    setBusy(true);
    try {
      await api<Budget>('/budgets', { method: 'PUT', body: JSON.stringify(r.body) });
      onSet();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="card form-grid" onSubmit={submit} aria-label={initial ? 'Change a budget' : 'Set a budget'} data-testid="budget-form">
      <label>
        For
        <select
          value={f.scope}
          onChange={(e) => setF((f) => ({ ...f, scope: e.target.value as BudgetForm['scope'], target: e.target.value === 'tenant' ? me?.tenant ?? '' : '' }))}
          data-testid="budget-scope"
        >
          <option value="tenant">a tenant</option>
          <option value="workspace">a workspace</option>
        </select>
      </label>
      {f.scope === 'tenant' ? (
        <label>
          Tenant
          <input value={f.target} onChange={set('target')} readOnly={!!me?.tenant} required data-testid="budget-target" />
        </label>
      ) : (
        <label>
          Workspace
          <select value={f.target} onChange={set('target')} required data-testid="budget-target">
            <option value="">choose…</option>
            {(workspaces.data ?? []).map((w) => (
              <option key={w.id} value={`${w.tenant}/${w.name}`}>
                {w.tenant}/{w.name}
              </option>
            ))}
          </select>
        </label>
      )}
      <label>
        Period
        <select value={f.period} onChange={set('period')} data-testid="budget-period">
          {BUDGET_PERIODS.map((p) => (
            <option key={p} value={p}>
              {p}
            </option>
          ))}
        </select>
      </label>
      <label>
        Max tokens
        <input inputMode="numeric" value={f.tokens} onChange={set('tokens')} placeholder="no limit" data-testid="budget-tokens" />
      </label>
      <label>
        Max cost (USD)
        <input inputMode="decimal" value={f.cost} onChange={set('cost')} placeholder="no limit" data-testid="budget-cost" />
      </label>
      {error && (
        <p className="error-box" role="alert" data-testid="budget-error">
          {error}
        </p>
      )}
      <div className="wide row">
        <button type="submit" className="btn primary" disabled={busy} data-testid="budget-set">
          {busy ? 'Saving…' : initial ? 'Save budget' : 'Set budget'}
        </button>
        {initial && (
          <button type="button" className="btn" onClick={onSet}>
            Cancel
          </button>
        )}
      </div>
    </form>
  );
}
