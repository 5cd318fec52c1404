import { describe as suite, expect, it } from 'vitest';
import { createElement } from 'react';
import { renderToStaticMarkup } from 'react-dom/server';
import { Allowed, can, describe, grantable, MeContext, navFor, type Need } from './roles';
import type { WhoAmI } from './api';

const who = (role: string, tenant?: string): WhoAmI => ({
  token_id: 'tok_1',
  token_name: 'alice',
  role,
  tenant,
  server_version: '0.1.0',
});

suite('roles', () => {
  it('each role holds what the server grants it', () => {
    const table: Record<string, Record<Need, boolean>> = {
      viewer: { read: true, operate: false, manage: false, admin: false },
      member: { read: true, operate: true, manage: false, admin: false },
      owner: { read: true, operate: true, manage: true, admin: false },
      admin: { read: true, operate: true, manage: true, admin: true },
    };
    for (const [role, needs] of Object.entries(table))
      for (const [need, expected] of Object.entries(needs)) expect(can(who(role, 'acme'), need as Need), `${role} ${need}`).toBe(expected);
    expect(can(undefined, 'read')).toBe(false);
    expect(can(who('superuser'), 'read')).toBe(false);
  });

  it('navigation hides token and tenant pages from those who cannot use them', () => {
    const labels = (role: string) => navFor(who(role, 'acme')).map(([, l]) => l);
    expect(labels('viewer')).toEqual(['Workspaces', 'Tasks', 'Inbox', 'Usage', 'Audit', 'Notifications', 'Egress', 'Budgets']);
    expect(labels('member')).toContain('New task');
    // Secrets (names and bindings, never values): members list them, as the API allows.
    expect(labels('viewer')).not.toContain('Secrets');
    expect(labels('member')).toContain('Secrets');
    expect(labels('member')).not.toContain('Tokens');
    expect(labels('owner')).toContain('Tokens');
    // The Users page (single sign-on people): owners and admins, as the API allows.
    expect(labels('owner')).toContain('Users');
    expect(labels('member')).not.toContain('Users');
    expect(labels('owner')).not.toContain('Tenants');
    expect(labels('admin')).toContain('Tenants');
  });

  it('owners grant up to owner, admins anything, others nothing', () => {
    expect(grantable(who('owner'))).toEqual(['viewer', 'member', 'owner']);
    expect(grantable(who('admin'))).toContain('admin');
    expect(grantable(who('member'))).toEqual([]);
  });

  it('controls render only for roles that may use them', () => {
    const render = (role: string, need: Need) =>
      renderToStaticMarkup(
        createElement(MeContext.Provider, { value: who(role, 'acme') }, createElement(Allowed, { need, children: createElement('button', null, 'Delete') })),
      );
    expect(render('viewer', 'operate')).toBe('');
    expect(render('member', 'operate')).toContain('<button>Delete</button>');
    expect(render('member', 'manage')).toBe('');
    expect(render('owner', 'manage')).toContain('Delete');
  });

  it('the header names who is signed in', () => {
    expect(describe(who('member', 'acme'))).toBe('alice · member · acme');
    expect(describe(who('admin'))).toBe('alice · admin · all tenants');
  });
});
