/**
 * `${VAR}` and `${VAR:default}` substitution in configuration values, applied to parsed string
 * values (never to YAML text, so an environment value cannot inject structure). `$${` writes a
 * literal `${`. `${VAR:-default}` (the bash and docker-compose spelling) is the same as
 * `${VAR:default}`: the default when VAR is unset or empty, without the `-` (`${VAR:-}` is an empty
 * default, `${VAR:--x}` the default `-x`). `${VAR-x}` (bash's unset-only default) is malformed.
 */
import { type ConfigIssue, secretShaped } from '../core/errors.ts';

// The last alternative is a `${` that starts no reference (`${VAR`, `${VAR-x}`, `${ VAR }`): an
// error, never kept as literal text (the typo would otherwise become the value, a credential say).
// The optional `-` after `:` is bash's `:-`, not part of the default: `${PORT:-8080}` is 8080.
const REF = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-?([^}]*))?\}|\$\{/g;

/** A string that took a value from the environment: where, as written, and as substituted. */
export interface Substitution {
  readonly path: string;
  readonly raw: string;
  readonly value: string;
  /** False when every reference in it took its `${VAR:default}` (written in the file, not secret). */
  readonly fromEnv: boolean;
}

/**
 * Substitute references in every string of `value`; unresolved references become issues. Strings
 * that took a value from the environment are added to `substituted` (so that error messages can
 * show them as written rather than echo the value).
 */
export function substituteEnv(
  value: unknown,
  env: Readonly<Record<string, string | undefined>>,
  issues: ConfigIssue[],
  path = '',
  substituted: Substitution[] = [],
): unknown {
  if (typeof value === 'string') {
    if (!value.includes('${')) return value;
    let fromEnv = false;
    let resolved = false;
    let malformed = false;
    const out = value.replace(REF, (whole, name: string | undefined, fallback: string | undefined) => {
      if (whole === '$${') return '${';
      if (whole === '${') {
        malformed = true;
        return whole;
      }
      const v = env[name as string];
      if (v !== undefined && v !== '') {
        fromEnv = true;
        return v;
      }
      if (fallback !== undefined) {
        resolved = true;
        return fallback;
      }
      issues.push({
        path: path || '(root)',
        message: `environment variable ${name} is not set; set it in the environment or as ${name}=… in <data_dir>/secrets.env (which the tessera commands read), or write \${${name}:default}, not for a secret: the default is written in this file`,
      });
      return '';
    });
    if (malformed) {
      issues.push({
        path: path || '(root)',
        message:
          'a "${" that starts no reference: write ${NAME} or ${NAME:default} (NAME of letters, digits and _), or $${ for a literal "${"',
      });
    }
    if ((fromEnv || resolved) && out !== '') substituted.push({ path, raw: value, value: out, fromEnv });
    return out;
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, env, issues, `${path}[${i}]`, substituted));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const at = path ? `${path}.${k}` : k;
      const shown = secretShaped(k) ? `(a key of ${k.length} characters)` : k;
      // YAML makes `__proto__` an own key; assigned here it would become the prototype, and the
      // schema would read its keys as if they had been written (and never report them as unknown).
      if (k === '__proto__') issues.push({ path: at, message: 'unknown key "__proto__"; remove it' });
      // Kept as written, `${SCOPE}` would name a scope (or a header, a card member) literally.
      else if (k.includes('${'))
        issues.push({
          path: path ? `${path}.${shown}` : shown,
          message: 'a ${VAR} is not substituted in a key, only in values: write the key out',
        });
      else out[k] = substituteEnv(v, env, issues, at, substituted);
    }
    return out;
  }
  return value;
}

/** True when a string still references the environment (used to tell users a secret came from it). */
export function referencesEnv(value: string): boolean {
  return /\$\{[A-Za-z_]/.test(value);
}
