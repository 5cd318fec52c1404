// Thin client of berth's REST API (/api/v1). Every request carries the bearer token kept in
// sessionStorage; errors become ApiError with the server's message.

export const TOKEN_KEY = 'berth.token';

export function getToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}
export function setToken(t: string | null) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

type Listener = () => void;
const unauthorizedListeners = new Set<Listener>();
export function onUnauthorized(l: Listener) {
  unauthorizedListeners.add(l);
  return () => {
    unauthorizedListeners.delete(l);
  };
}

export async function errorFrom(res: Response): Promise<ApiError> {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText || 'error'}`;
  try {
    const text = await res.text();
    try {
      const body = JSON.parse(text);
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch {
      if (text.trim()) message = text.trim().slice(0, 300);
    }
  } catch {
    /* ignore */
  }
  return new ApiError(res.status, code, message);
}

export async function apiFetch(path: string, init: RequestInit = {}, token = getToken()): Promise<Response> {
  const headers = new Headers(init.headers);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  if (init.body && !headers.has('Content-Type')) headers.set('Content-Type', 'application/json');
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, { ...init, headers });
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the server: ${(e as Error).message}`);
  }
  if (!res.ok) {
    const err = await errorFrom(res);
    if (res.status === 401) unauthorizedListeners.forEach((l) => l());
    throw err;
  }
  return res;
}

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await apiFetch(path, init);
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const post = <T>(path: string, body?: unknown) =>
  api<T>(path, { method: 'POST', body: body === undefined ? undefined : JSON.stringify(body) });

/** A workspace reference as one URL path segment (`tenant/name` → `tenant%2Fname`). */
export const wsRef = (ws: { tenant: string; name: string } | string) =>
  encodeURIComponent(typeof ws === 'string' ? ws : `${ws.tenant}/${ws.name}`);

// ---- wire types (mirror crates/berth-api/src/lib.rs) ----

export interface Limits {
  memory_bytes: number;
  cpus: number;
  pids: number;
}
export interface Failure {
  reason: string;
  message: string;
  at: string;
}
export interface WsUsage {
  memory_bytes: number;
  memory_limit_bytes: number;
  cpu_percent: number;
  pids: number;
}
export interface DaemonStatus {
  reachable: boolean;
  protocol?: number;
  version?: string;
  outdated: boolean;
  message?: string;
}
export interface Workspace {
  id: string;
  name: string;
  tenant: string;
  state: string;
  image: string;
  limits: Limits;
  network: string;
  volume: string;
  container_id?: string;
  created_at: string;
  updated_at: string;
  last_failure?: Failure;
  oom_kills: number;
  usage?: WsUsage;
  daemon?: DaemonStatus;
}
export interface Session {
  id: string;
  name: string;
  command: string[];
  state: string;
  exit_code?: number;
  created_at: string;
  attached: number;
  cols: number;
  rows: number;
  scrollback_bytes: number;
}
export interface TaskUsage {
  input_tokens: number;
  output_tokens: number;
  cached_input_tokens: number;
  cost_usd?: number;
}
export interface Task {
  id: string;
  workspace: string;
  workspace_id: string;
  agent: string;
  state: string;
  model?: string;
  dir: string;
  worktree?: string;
  prompt: string;
  created_at: string;
  updated_at: string;
  last_seq: number;
  usage: TaskUsage;
  last_message?: string;
  reason?: string;
  agent_session_id?: string;
}
export interface TaskEvent {
  seq: number;
  at: string;
  type: string;
  [k: string]: unknown;
}
export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  result: string;
  detail?: string;
}
export interface UsageRow {
  tenant: string;
  workspace: string;
  provider: string;
  model?: string;
  calls: number;
  errors: number;
  input_tokens: number;
  output_tokens: number;
  cache_read_tokens: number;
  cache_write_tokens: number;
  cost_usd?: number;
}
export interface UsageReport {
  since?: string;
  rows: UsageRow[];
  total: UsageRow;
}
export interface EgressLogEntry {
  id: number;
  at: string;
  task?: string;
  method?: string;
  host: string;
  port: number;
  path?: string;
  decision: string;
  rule?: string;
  reason: string;
  bytes_up: number;
  bytes_down: number;
  intercepted: boolean;
}
export interface EgressTemplate {
  name: string;
  tenant?: string;
  builtin: boolean;
  description?: string;
  rules: string[];
  used_by: string[];
}
export interface EffectiveEgressRule {
  source: 'workspace' | 'template';
  template?: string;
  index: number;
  rule: string;
  label: string;
}
export interface EffectiveEgress {
  templates: string[];
  rules: EffectiveEgressRule[];
}
export interface WhoAmI {
  token_id: string;
  token_name: string;
  role: string;
  server_version: string;
}

export const AGENTS = ['claude', 'codex', 'gemini', 'opencode'] as const;
export const TASK_STATES = ['queued', 'starting', 'running', 'waiting', 'completed', 'interrupted', 'failed', 'cancelled'] as const;
