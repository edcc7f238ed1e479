/**
 * `${VAR}` and `${VAR:default}` substitution in configuration values, applied to parsed string
 * values (never to YAML text, so an environment value cannot inject structure). `$${` writes a
 * literal `${`.
 */
import type { ConfigIssue } from '../core/errors.ts';

const REF = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}/g;

/** Substitute references in every string of `value`; unresolved references become issues. */
export function substituteEnv(
  value: unknown,
  env: Readonly<Record<string, string | undefined>>,
  issues: ConfigIssue[],
  path = '',
): unknown {
  if (typeof value === 'string') {
    if (!value.includes('${')) return value;
    return value.replace(REF, (whole, name: string | undefined, fallback: string | undefined) => {
      if (whole === '$${') return '${';
      const v = env[name as string];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      issues.push({ path: path || '(root)', message: `environment variable ${name} is not set; set it or write \${${name}:default}` });
      return '';
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, issues, `${path}[${i}]`));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const at = path ? `${path}.${k}` : k;
      // YAML makes `__proto__` an own key; assigned here it would become the prototype, and the
      // schema would read its keys as if they had been written (and never report them as unknown).
      if (k === '__proto__') issues.push({ path: at, message: 'unknown key "__proto__"; remove it' });
      else out[k] = substituteEnv(v, env, issues, at);
    }
    return out;
  }
  return value;
}

/** True when a string still references the environment (used to tell users a secret came from it). */
export function referencesEnv(value: string): boolean {
  return /\$\{[A-Za-z_]/.test(value);
}
