// Who may do what in the UI: the same role order as the server (viewer < member < owner < admin).
// Controls a role may not use are hidden; the API refuses them anyway (403).

import { createContext, createElement, Fragment, useContext, type ReactNode } from 'react';
import type { WhoAmI } from './api';

export const ROLES = ['viewer', 'member', 'owner', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** What a control needs: look, work (workspaces, sessions, tasks), govern a tenant (egress rules,
 * templates, secrets, budgets, tokens, removing workspaces), or the whole server (quotas). */
export type Need = 'read' | 'operate' | 'manage' | 'admin';

const MIN: Record<Need, Role> = { read: 'viewer', operate: 'member', manage: 'owner', admin: 'admin' };

export function rank(role: string | undefined): number {
  return ROLES.indexOf(role as Role);
}

/** Whether the caller holds `need`; unknown callers (still loading) hold nothing. */
export function can(me: Pick<WhoAmI, 'role'> | undefined, need: Need): boolean {
  return !!me && rank(me.role) >= rank(MIN[need]);
}

/** The roles `me` may give a new token: an admin any, an owner up to owner. */
export function grantable(me: Pick<WhoAmI, 'role'> | undefined): Role[] {
  if (!me) return [];
  if (me.role === 'admin') return [...ROLES];
  if (me.role === 'owner') return ['viewer', 'member', 'owner'];
  return [];
}

/** The navigation entries for `me`. */
export function navFor(me: Pick<WhoAmI, 'role'> | undefined): Array<readonly [string, string]> {
  const all: Array<readonly [string, string, Need]> = [
    ['/workspaces', 'Workspaces', 'read'],
    ['/tasks', 'Tasks', 'read'],
    ['/tasks/new', 'New task', 'operate'],
    ['/inbox', 'Inbox', 'read'],
    ['/usage', 'Usage', 'read'],
    ['/audit', 'Audit', 'read'],
    ['/notifications', 'Notifications', 'read'],
    ['/egress', 'Egress', 'read'],
    ['/budgets', 'Budgets', 'read'],
    // Listing secrets (names and bindings) takes a member, as the API does.
    ['/secrets', 'Secrets', 'operate'],
    ['/tokens', 'Tokens', 'manage'],
    ['/users', 'Users', 'manage'],
    ['/tenants', 'Tenants', 'admin'],
  ];
  return all.filter(([, , need]) => can(me, need)).map(([href, label]) => [href, label] as const);
}

/** `alice · member · acme`, what the header shows. */
export function describe(me: WhoAmI): string {
  return [me.token_name, me.role, me.tenant ?? 'all tenants'].join(' · ');
}

export const MeContext = createContext<WhoAmI | undefined>(undefined);

export function useMe(): WhoAmI | undefined {
  return useContext(MeContext);
}

export function useCan(need: Need): boolean {
  return can(useMe(), need);
}

/** Renders its children only for callers holding `need`. */
export function Allowed({ need, children }: { need: Need; children: ReactNode }) {
  return useCan(need) ? createElement(Fragment, null, children) : null;
}
