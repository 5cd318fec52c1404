import { describe, expect, it } from 'vitest';
import { focusStep, missingParam, paramsToSend, provisioningLive, stepLine } from './templates';

const params = [
  { name: 'repo', description: 'the repository URL', required: true },
  { name: 'branch', required: false, default: 'main' },
];

describe('template parameters', () => {
  it('a required parameter left empty is named, with its description', () => {
    expect(missingParam(params, {})).toBe('repo is required (the repository URL)');
    expect(missingParam(params, { repo: '   ' })).toBe('repo is required (the repository URL)');
    expect(missingParam(params, { repo: 'https://h/x.git' })).toBeUndefined();
  });
  it('empty optional parameters are left to their defaults; values are trimmed', () => {
    expect(paramsToSend(params, { repo: ' https://h/x.git ', branch: '' })).toEqual({ repo: 'https://h/x.git' });
    expect(paramsToSend(params, { repo: 'r', branch: 'dev', stray: 'x' })).toEqual({ repo: 'r', branch: 'dev' });
  });
});

describe('provisioning steps', () => {
  const steps = [
    { index: 0, name: 'clone app', state: 'done', log: '' },
    { index: 1, name: 'install', state: 'failed', log: 'npm ERR!', message: 'failed with exit code 1' },
    { index: 2, name: 'test', state: 'pending', log: '' },
  ];
  it('lines number the steps and carry the reason', () => {
    expect(stepLine(steps[1], 3)).toBe('2/3 install — failed (failed with exit code 1)');
    expect(stepLine(steps[0], 3)).toBe('1/3 clone app — done');
  });
  it('the running step is shown open, else the failed one', () => {
    expect(focusStep(steps)?.name).toBe('install');
    expect(focusStep([{ ...steps[0] }, { ...steps[2], state: 'running' }])?.name).toBe('test');
    expect(focusStep([steps[0]])).toBeUndefined();
  });
  it('only pending and running provisioning is polled', () => {
    expect(provisioningLive('running')).toBe(true);
    expect(provisioningLive('pending')).toBe(true);
    expect(provisioningLive('done')).toBe(false);
    expect(provisioningLive('failed')).toBe(false);
  });
});
