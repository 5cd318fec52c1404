// Workspace templates in the UI: the parameter form of a template-based create, and the
// provisioning step list of a workspace made from one. Pure logic here, so it is unit-tested.

export interface TemplateParamLike {
  name: string;
  description?: string | null;
  required: boolean;
  default?: string | null;
}

export interface StepLike {
  index: number;
  name: string;
  state: string;
  log: string;
  message?: string | null;
}

/** The parameters to send: values typed in, trimmed; empty optional ones left to their default. */
export function paramsToSend(params: TemplateParamLike[], values: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of params) {
    const v = (values[p.name] ?? '').trim();
    if (v !== '') out[p.name] = v;
  }
  return out;
}

/** The first required parameter left empty, as a sentence; undefined when the form is complete. */
export function missingParam(params: TemplateParamLike[], values: Record<string, string>): string | undefined {
  const p = params.find((p) => p.required && (values[p.name] ?? '').trim() === '');
  return p ? `${p.name} is required${p.description ? ` (${p.description})` : ''}` : undefined;
}

/** One line per step for the list: "2/4 install — running". */
export function stepLine(step: StepLike, total: number): string {
  const note = step.message ? ` (${step.message})` : '';
  return `${step.index + 1}/${total} ${step.name} — ${step.state}${note}`;
}

/** The step whose log to show open: the running one, else the failed one. */
export function focusStep(steps: StepLike[]): StepLike | undefined {
  return steps.find((s) => s.state === 'running') ?? steps.find((s) => s.state === 'failed');
}

/** Whether the step list is still moving (poll it). */
export function provisioningLive(state: string): boolean {
  return state === 'pending' || state === 'running';
}
