// Thin client of berth's REST API (/api/v1). Every request carries the bearer token kept in
// sessionStorage; errors become ApiError with the server's message.

import type { components } from './api-schema';

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

// ---- wire types: generated from the server's OpenAPI document (scripts/gen-api-types) ----

type Schemas = components['schemas'];

export type Limits = Schemas['Limits'];
export type Failure = Schemas['Failure'];
export type WsUsage = Schemas['Usage'];
export type DaemonStatus = Schemas['DaemonStatus'];
export type Workspace = Schemas['Workspace'];
export type Session = Schemas['Session'];
export type TaskUsage = Schemas['TaskUsage'];
export type Task = Schemas['Task'];
export type AuditEntry = Schemas['AuditEntry'];
export type UsageRow = Schemas['UsageRow'];
export type UsageReport = Schemas['UsageReport'];
export type EgressLogEntry = Schemas['EgressLogEntry'];
export type EgressTemplate = Schemas['EgressTemplate'];
export type EffectiveEgressRule = Schemas['EffectiveEgressRule'];
export type EffectiveEgress = Schemas['EffectiveEgress'];
export type WhoAmI = Schemas['WhoAmI'];
export type TaskDiff = Schemas['TaskDiff'];
export type CreateWorkspaceRequest = Schemas['CreateWorkspace'];
export type CreateTaskRequest = Schemas['CreateTask'];

/** One stored task event (`GET /api/v1/tasks/{task}/events`, the SSE stream); the OpenAPI document
 * types its fields as free-form JSON, so this stays written by hand. */
export interface TaskEvent {
  seq: number;
  at: string;
  type: string;
  [k: string]: unknown;
}

export const AGENTS = ['claude', 'codex', 'gemini', 'opencode'] as const;
export const TASK_STATES = ['queued', 'starting', 'running', 'waiting', 'completed', 'interrupted', 'failed', 'cancelled'] as const;
