import { api, type AuditEntry } from '../api';
import { age, dateTime } from '../format';
import { useLoad } from '../hooks';
import { Empty, ErrorBox, Loading } from '../ui';

export function Audit() {
  const a = useLoad(() => api<AuditEntry[]>('/audit?limit=500'), [], 10000);
  return (
    <section aria-labelledby="audit-title">
      <div className="page-head">
        <h1 id="audit-title">Audit log</h1>
        <button type="button" className="btn small" onClick={a.reload}>Refresh</button>
      </div>
      <p className="muted small">Every mutating call: who, what, on which target, with what result. Newest first.</p>
      <ErrorBox error={a.error} onRetry={a.reload} />
      {a.loading && !a.data ? (
        <Loading what="Loading audit log" />
      ) : a.data && a.data.length === 0 ? (
        <Empty>Nothing recorded yet.</Empty>
      ) : (
        a.data && (
          <div className="table-wrap">
            <table className="table cards" data-testid="audit-table">
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Actor</th>
                  <th scope="col">Action</th>
                  <th scope="col">Target</th>
                  <th scope="col">Result</th>
                </tr>
              </thead>
              <tbody>
                {a.data.map((e) => (
                  <tr key={e.id} className={e.result !== 'ok' ? 'denied' : ''}>
                    <td data-label="When" title={dateTime(e.at)}>{age(e.at)} ago</td>
                    <td data-label="Actor" className="mono small">{e.actor}</td>
                    <td data-label="Action"><code>{e.action}</code></td>
                    <td data-label="Target" className="mono small">{e.target}</td>
                    <td data-label="Result">
                      <span className={`badge ${e.result === 'ok' ? 'state-completed' : 'state-failed'}`}>{e.result}</span>
                      {e.detail && <div className="muted small">{e.detail}</div>}
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
