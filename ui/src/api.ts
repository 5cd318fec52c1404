// Thin client of berth's REST API (/api/v1). Every request carries the bearer token kept in
// sessionStorage (or a remembered device's own token in localStorage), or (signed in with single sign-on) the browser's session cookie plus the CSRF
// token on state-changing requests (auth.ts); errors become ApiError with the server's message.

import type { components } from './api-schema';
import { authHeaders } from './auth';

export const TOKEN_KEY = 'berth.token';
/** A remembered device's own token (from `POST /auth/device`), shared by the browser's tabs. */
export const DEVICE_KEY = 'berth.device';

type Stores = { session: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>; local: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> };
const browserStores = (): Stores => ({ session: sessionStorage, local: localStorage });

/** The bearer token of this tab: its own (session storage), else the remembered device's. */
export function getToken(stores: Stores = browserStores()): string | null {
  try {
    return stores.session.getItem(TOKEN_KEY) ?? stores.local.getItem(DEVICE_KEY);
  } catch {
    return null;
  }
}

/** Keeps `t` for this tab only, or (`device`) as the remembered device's token for every tab.
 * `null` forgets both. The pasted token itself is never put in local storage. */
export function setToken(t: string | null, device = false, stores: Stores = browserStores()) {
  if (t && device) {
    stores.local.setItem(DEVICE_KEY, t);
    stores.session.removeItem(TOKEN_KEY);
  } else if (t) stores.session.setItem(TOKEN_KEY, t);
  else {
    stores.session.removeItem(TOKEN_KEY);
    stores.local.removeItem(DEVICE_KEY);
  }
}

/** Whether this browser is signed in as a remembered device. */
export function isRememberedDevice(stores: Stores = browserStores()): boolean {
  try {
    return !stores.session.getItem(TOKEN_KEY) && !!stores.local.getItem(DEVICE_KEY);
  } catch {
    return false;
  }
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
  authHeaders(headers, init.method, token);
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
export type SessionInfo = Schemas['SessionInfo'];
export type AuthConfig = Schemas['AuthConfig'];
export type User = Schemas['User'];
export type TokenInfo = Schemas['TokenInfo'];
export type CreateTokenRequest = Schemas['CreateToken'];
export type CreatedToken = Schemas['CreatedToken'];
export type TenantInfo = Schemas['TenantInfo'];
export type TenantQuota = Schemas['TenantQuota'];
export type TenantQuotaReport = Schemas['TenantQuotaReport'];
export type TaskDiff = Schemas['TaskDiff'];
export type TaskPush = Schemas['TaskPush'];
export type TaskPullRequest = Schemas['TaskPullRequest'];
export type PushTaskRequest = Schemas['PushTask'];
export type CreatePullRequestRequest = Schemas['CreatePullRequest'];
export type CreateWorkspaceRequest = Schemas['CreateWorkspace'];
export type WorkspaceTemplate = Schemas['WorkspaceTemplate'];
export type ProvisionStatus = Schemas['ProvisionStatus'];
export type CreateTaskRequest = Schemas['CreateTask'];
export type Approval = Schemas['Approval'];
export type DecideRequest = Schemas['Decide'];
export type AccessRequest = Schemas['AccessRequest'];
export type Inbox = Schemas['Inbox'];
export type Subscription = Schemas['Subscription'];
export type CreateSubscriptionRequest = Schemas['CreateSubscription'];
export type CreatedSubscription = Schemas['CreatedSubscription'];
export type WebPushInfo = Schemas['WebPushInfo'];
export type Delivery = Schemas['Delivery'];
export type TestResult = Schemas['TestResult'];
export type NotificationEvent = Schemas['NotificationEvent'];
export type SecretInfo = Schemas['SecretInfo'];
export type SecretUsage = Schemas['SecretUsage'];
export type Budget = Schemas['Budget'];
export type SetBudget = Schemas['SetBudget'];
export type CreateEgressTemplateRequest = Schemas['CreateEgressTemplate'];
export type SetEgressTemplateRequest = Schemas['SetEgressTemplate'];

/** One stored task event (`GET /api/v1/tasks/{task}/events`, the SSE stream); the OpenAPI document
 * types its fields as free-form JSON, so this stays written by hand. */
export interface TaskEvent {
  seq: number;
  at: string;
  type: string;
  [k: string]: unknown;
}

export const AGENTS = ['claude', 'codex', 'gemini', 'opencode'] as const;
export const APPROVAL_POLICIES = ['never', 'on-request', 'always'] as const;
export const TASK_STATES = ['queued', 'starting', 'running', 'waiting', 'completed', 'interrupted', 'failed', 'cancelled'] as const;
