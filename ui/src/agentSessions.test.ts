import { describe, expect, it } from 'vitest';
import { AGENT_BUTTONS, agentSessionRequest, canContinueInteractively, guessTerminalSize, terminalRoute } from './agentSessions';

describe('agent sessions', () => {
  it('offers the four agents by their product names', () => {
    expect(AGENT_BUTTONS.map((b) => b.label)).toEqual(['Claude Code', 'Codex', 'Gemini', 'OpenCode']);
    expect(AGENT_BUTTONS.map((b) => b.agent)).toEqual(['claude', 'codex', 'gemini', 'opencode']);
  });

  it('asks for the agent, never a command, with a size the API takes', () => {
    expect(agentSessionRequest('codex')).toEqual({ agent: 'codex' });
    expect(agentSessionRequest('claude', 100.7, 30)).toEqual({ agent: 'claude', cols: 100, rows: 30 });
    expect(agentSessionRequest('gemini', 5000, 0)).toEqual({ agent: 'gemini', cols: 1000, rows: 1 });
    expect(agentSessionRequest('opencode', NaN, 24)).toEqual({ agent: 'opencode', rows: 24 });
    expect('cmd' in agentSessionRequest('claude', 80, 24)).toBe(false);
  });

  it('opens the terminal by name, else by id', () => {
    expect(terminalRoute('acme%2Fweb', { name: 'claude', id: 'ab12' })).toBe('/workspaces/acme%2Fweb/terminal/claude');
    expect(terminalRoute('w', { name: 'task-tk 1', id: 'x' })).toBe('/workspaces/w/terminal/task-tk%201');
    expect(terminalRoute('w', { name: '', id: 'ab12' })).toBe('/workspaces/w/terminal/ab12');
  });

  it('continues only a task at rest with a conversation, and never a codex one', () => {
    const agent = 'claude';
    expect(canContinueInteractively({ state: 'completed', agent, agent_session_id: 's' })).toBe(true);
    expect(canContinueInteractively({ state: 'interrupted', agent: 'opencode', agent_session_id: 's' })).toBe(true);
    for (const state of ['queued', 'starting', 'running', 'waiting', 'failed', 'cancelled']) {
      expect(canContinueInteractively({ state, agent, agent_session_id: 's' })).toBe(false);
    }
    expect(canContinueInteractively({ state: 'completed', agent, agent_session_id: null })).toBe(false);
    expect(canContinueInteractively({ state: 'completed', agent })).toBe(false);
    expect(canContinueInteractively({ state: 'completed', agent: 'codex', agent_session_id: 's' })).toBe(false);
  });

  it('guesses a usable size even on a phone', () => {
    expect(guessTerminalSize(375, 667)).toEqual({ cols: 41, rows: 32 });
    expect(guessTerminalSize(100, 100)).toEqual({ cols: 20, rows: 10 });
  });
});
