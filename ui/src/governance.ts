// The tenant's governance pages (Secrets, Budgets, Egress templates): what their forms send and
// how their lists read. Pure logic here, so it is unit-tested; the pages only render it.

import type { Budget, SecretUsage, SetBudget } from './api';

/** The longest secret name the vault takes. */
export const SECRET_NAME_MAX = 64;

/** Why `name` cannot name a secret (it must look like an environment variable), or undefined. */
export function secretNameError(name: string): string | undefined {
  if (!name) return 'Enter a name.';
  if (name.length > SECRET_NAME_MAX) return `At most ${SECRET_NAME_MAX} characters.`;
  if (!/^[A-Z_][A-Z0-9_]*$/.test(name)) return 'Use A–Z, 0–9 and _, starting with a letter or _ (like an environment variable).';
  return undefined;
}

/** A secret binding in one line: `acme/web: placeholder for api.github.com (authorization)`. */
export function bindingLine(u: SecretUsage): string {
  const hosts = u.hosts.length ? ` for ${u.hosts.join(', ')}` : '';
  const headers = !u.exposed && u.headers?.length ? ` (${u.headers.join(', ')})` : '';
  return `${u.workspace}: ${u.delivery}${hosts}${headers}`;
}

export const BUDGET_PERIODS = ['day', 'month', 'total'] as const;

export interface BudgetForm {
  scope: 'tenant' | 'workspace';
  target: string;
  period: string;
  tokens: string;
  cost: string;
}

/** The `PUT /budgets` body of the form, or the first thing wrong with it. */
export function budgetBody(f: BudgetForm): { body: SetBudget } | { error: string } {
  const target = f.target.trim();
  if (!target) return { error: f.scope === 'tenant' ? 'Enter the tenant.' : 'Enter the workspace (tenant/name).' };
  if (!(BUDGET_PERIODS as readonly string[]).includes(f.period)) return { error: 'The period is day, month or total.' };
  const tokens = f.tokens.trim().replace(/[_,\s]/g, '');
  const cost = f.cost.trim().replace(/^\$/, '');
  let max_tokens: number | undefined;
  let max_cost_usd: number | undefined;
  if (tokens) {
    if (!/^\d+$/.test(tokens)) return { error: 'Tokens must be a whole number.' };
    max_tokens = Number(tokens);
    if (!Number.isSafeInteger(max_tokens)) return { error: 'Tokens: that number is too large.' };
  }
  if (cost) {
    if (!/^\d+(\.\d+)?$/.test(cost)) return { error: 'Cost must be an amount in US dollars, such as 5 or 2.50.' };
    max_cost_usd = Number(cost);
  }
  if (max_tokens === undefined && max_cost_usd === undefined) return { error: 'Give a token limit, a cost limit or both.' };
  const body = {
    ...(f.scope === 'tenant' ? { tenant: target } : { workspace: target }),
    period: f.period as (typeof BUDGET_PERIODS)[number],
    ...(max_tokens !== undefined ? { max_tokens } : {}),
    ...(max_cost_usd !== undefined ? { max_cost_usd } : {}),
  } as SetBudget;
  return { body };
}

/** The query naming a budget for `DELETE /budgets`. */
export function budgetTargetQuery(b: Pick<Budget, 'scope' | 'target'>): string {
  const key = b.scope === 'workspace' ? 'workspace' : 'tenant';
  return `?${key}=${encodeURIComponent(b.target)}`;
}

/** How much of a budget is spent, 0..1 (the larger of its token and cost shares; over 1 when
 *  overspent by calls in flight). */
export function budgetShare(b: Pick<Budget, 'max_tokens' | 'max_cost_usd' | 'spent_tokens' | 'spent_cost_usd'>): number {
  const shares: number[] = [];
  if (b.max_tokens !== undefined && b.max_tokens !== null) shares.push(b.max_tokens > 0 ? b.spent_tokens / b.max_tokens : b.spent_tokens > 0 ? Infinity : 1);
  if (b.max_cost_usd !== undefined && b.max_cost_usd !== null)
    shares.push(b.max_cost_usd > 0 ? b.spent_cost_usd / b.max_cost_usd : b.spent_cost_usd > 0 ? Infinity : 1);
  return shares.length ? Math.max(...shares) : 0;
}

/** Egress rules typed one per line: trimmed, blank lines dropped. */
export function rulesFromText(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/** The form value of a template's rules. */
export const rulesToText = (rules: string[]) => rules.join('\n');
