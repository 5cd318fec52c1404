import { useState } from 'react';
import { api, type UsageReport, type UsageRow } from '../api';
import { dateTime, num, usdExact } from '../format';
import { useLoad } from '../hooks';
import { Empty, ErrorBox, Loading } from '../ui';

const RANGES = [
  ['', 'All time'],
  ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'],
  ['30d', 'Last 30 days'],
] as const;

const GROUPS = [
  ['', 'Workspace and model'],
  ['task', 'Task'],
  ['workspace', 'Workspace'],
  ['tenant', 'Tenant'],
  ['model', 'Model'],
  ['day', 'Day'],
] as const;

export function UsagePage() {
  const [since, setSince] = useState('');
  const [by, setBy] = useState('');
  const query = [since && `since=${since}`, by && `by=${by}`].filter(Boolean).join('&');
  const u = useLoad(() => api<UsageReport>(`/usage${query ? `?${query}` : ''}`), [query], 15000);
  return (
    <section aria-labelledby="usage-title">
      <div className="page-head">
        <h1 id="usage-title">LLM usage</h1>
        <div className="field inline">
          <label htmlFor="usage-since">Period</label>
          <select id="usage-since" value={since} onChange={(e) => setSince(e.target.value)} data-testid="usage-since">
            {RANGES.map(([v, l]) => (
              <option key={v} value={v}>{l}</option>
            ))}
          </select>
          <label htmlFor="usage-by">Per</label>
          <select id="usage-by" value={by} onChange={(e) => setBy(e.target.value)} data-testid="usage-by">
            {GROUPS.map(([v, l]) => (
              <option key={v} value={v}>{l}</option>
            ))}
          </select>
        </div>
      </div>
      <p className="muted small">Every call through berth's LLM gateway{by ? `, per ${by}` : ', per workspace, provider and model'}; costs are exact sums of the calls{u.data?.since ? `, since ${dateTime(u.data.since)}` : ''}.</p>
      <ErrorBox error={u.error} onRetry={u.reload} />
      {u.loading && !u.data ? (
        <Loading what="Loading usage" />
      ) : u.data && u.data.rows.length === 0 ? (
        <Empty>No LLM calls in this period.</Empty>
      ) : (
        u.data && (
          <div className="table-wrap">
            <table className="table cards num-table" data-testid="usage-table">
              <thead>
                <tr>
                  <th scope="col">{by === 'task' ? 'Task' : by === 'day' ? 'Day' : by === 'tenant' ? 'Tenant' : 'Workspace'}</th>
                  <th scope="col">Provider</th>
                  <th scope="col">Model</th>
                  <th scope="col">Calls</th>
                  <th scope="col">Errors</th>
                  <th scope="col">Input</th>
                  <th scope="col">Output</th>
                  <th scope="col">Cache read/write</th>
                  <th scope="col">Cost</th>
                </tr>
              </thead>
              <tbody>
                {u.data.rows.map((r, i) => (
                  <Row key={i} r={r} />
                ))}
              </tbody>
              <tfoot>
                <Row r={u.data.total} total />
              </tfoot>
            </table>
          </div>
        )
      )}
    </section>
  );
}

function Row({ r, total }: { r: UsageRow; total?: boolean }) {
  return (
    <tr className={total ? 'total' : ''} data-testid={total ? 'usage-total' : undefined}>
      <td data-label="Group">{total ? <strong>Total</strong> : r.task || r.day || r.workspace || r.tenant || '—'}</td>
      <td data-label="Provider">{r.provider}</td>
      <td data-label="Model">{r.model ?? '—'}</td>
      <td data-label="Calls">{num(r.calls)}</td>
      <td data-label="Errors" className={r.errors ? 'failure' : ''}>{num(r.errors)}</td>
      <td data-label="Input">{num(r.input_tokens)}</td>
      <td data-label="Output">{num(r.output_tokens)}</td>
      <td data-label="Cache read/write">{num(r.cache_read_tokens)} / {num(r.cache_write_tokens)}</td>
      <td data-label="Cost" data-testid={total ? 'usage-total-cost' : undefined}>{usdExact(r.cost, r.fallback_calls)}</td>
    </tr>
  );
}
