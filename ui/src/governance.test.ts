import { describe, expect, it } from 'vitest';
import { bindingLine, budgetBody, budgetShare, budgetTargetQuery, rulesFromText, rulesToText, secretNameError, type BudgetForm } from './governance';

const form = (f: Partial<BudgetForm>): BudgetForm => ({ scope: 'tenant', target: 'acme', period: 'day', tokens: '', cost: '', ...f });

describe('secret names', () => {
  it('takes what the vault takes: like an environment variable, at most 64', () => {
    for (const ok of ['GITHUB_TOKEN', '_X', 'A1', 'A'.repeat(64)]) expect(secretNameError(ok), ok).toBeUndefined();
    for (const bad of ['', 'github_token', '1ABC', 'A-B', 'A B', 'Ä', 'A'.repeat(65)]) expect(secretNameError(bad), bad).toBeDefined();
  });
});

describe('secret bindings', () => {
  it('names the workspace, delivery, hosts and (for placeholders) headers', () => {
    expect(bindingLine({ workspace: 'acme/web', delivery: 'placeholder', hosts: ['api.github.com'], headers: ['authorization'], exposed: false })).toBe(
      'acme/web: placeholder for api.github.com (authorization)',
    );
    expect(bindingLine({ workspace: 'acme/web', delivery: 'env', hosts: [], headers: [], exposed: true })).toBe('acme/web: env');
  });
});

describe('budget form', () => {
  it('sends the target of its scope, the period and the limits given', () => {
    expect(budgetBody(form({ tokens: '1_000_000', cost: '$2.50' }))).toEqual({
      body: { tenant: 'acme', period: 'day', max_tokens: 1_000_000, max_cost_usd: 2.5 },
    });
    expect(budgetBody(form({ scope: 'workspace', target: ' acme/web ', period: 'month', cost: '5' }))).toEqual({
      body: { workspace: 'acme/web', period: 'month', max_cost_usd: 5 },
    });
  });

  it('refuses what the server would refuse, saying why', () => {
    const error = (f: Partial<BudgetForm>) => ('error' in budgetBody(form(f)) ? (budgetBody(form(f)) as { error: string }).error : undefined);
    expect(error({})).toMatch(/token limit, a cost limit/);
    expect(error({ target: ' ', tokens: '5' })).toMatch(/tenant/);
    expect(error({ tokens: '-5' })).toMatch(/whole number/);
    expect(error({ tokens: '1.5' })).toMatch(/whole number/);
    expect(error({ tokens: '99999999999999999999' })).toMatch(/too large/);
    expect(error({ cost: '-1' })).toMatch(/US dollars/);
    expect(error({ cost: 'abc' })).toMatch(/US dollars/);
    expect(error({ period: 'week', cost: '1' })).toMatch(/day, month or total/);
  });

  it('names a budget to remove by its scope', () => {
    expect(budgetTargetQuery({ scope: 'tenant', target: 'acme' })).toBe('?tenant=acme');
    expect(budgetTargetQuery({ scope: 'workspace', target: 'acme/web' })).toBe('?workspace=acme%2Fweb');
  });

  it('spent share is the larger of tokens and cost', () => {
    expect(budgetShare({ max_tokens: 100, spent_tokens: 25, max_cost_usd: 2, spent_cost_usd: 1 })).toBe(0.5);
    expect(budgetShare({ max_tokens: 100, spent_tokens: 80, spent_cost_usd: 7 })).toBe(0.8);
    expect(budgetShare({ max_cost_usd: 0, spent_tokens: 0, spent_cost_usd: 0 })).toBe(1);
    expect(budgetShare({ spent_tokens: 5, spent_cost_usd: 1 })).toBe(0);
  });
});

describe('egress template rules', () => {
  it('one rule a line, blank lines dropped, round trip', () => {
    expect(rulesFromText('  allow pypi.org:443 \n\n deny * \n')).toEqual(['allow pypi.org:443', 'deny *']);
    expect(rulesFromText(rulesToText(['allow a.b', 'deny c.d POST /x']))).toEqual(['allow a.b', 'deny c.d POST /x']);
    expect(rulesFromText('')).toEqual([]);
  });
});
