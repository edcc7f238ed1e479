/**
 * Validate configuration against a schema: substitute the environment, report every problem with
 * its exact path (and a suggestion for misspelled keys), then deep-freeze the result.
 */
import type { z } from 'zod';
import { ConfigError, type ConfigIssue, editDistance as distance, quoted, secretShaped } from '../core/errors.ts';
import { deepFreeze } from '../core/verify/principal.ts';
import { addConfigIssues, always, type Trusted, trusted } from './cross-check.ts';
import { type Substitution, substituteEnv } from './env.ts';

/** Render a zod path as `issuers[0].jwks_uri`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

function knownKeys(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  // Walk the schema along the path to list the keys the object there accepts.
  // biome-ignore lint/suspicious/noExplicitAny: zod internals differ per schema kind
  let s: any = schema;
  const unwrap = () => {
    for (let i = 0; i < 8 && s; i++) {
      const def = s._zod?.def;
      if (!def) break;
      if (def.innerType) s = def.innerType;
      else if (def.type === 'pipe') s = def.in;
      else if (def.type === 'union')
        s = def.options.find((o: { _zod?: { def?: { shape?: unknown } } }) => o._zod?.def?.shape) ?? def.options[0];
      else break;
    }
  };
  unwrap();
  for (const p of path) {
    const def = s?._zod?.def;
    if (!def) return [];
    if (typeof p === 'number') s = def.element;
    else s = def.shape?.[p] ?? def.valueType;
    unwrap();
  }
  return Object.keys(s?._zod?.def?.shape ?? {});
}

/** A kind of value as a YAML writer knows it (zod's type names are JavaScript's). */
const NOUNS: Readonly<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'a boolean',
  array: 'a list',
  tuple: 'a list',
  object: 'a mapping',
  record: 'a mapping',
  map: 'a mapping',
  null: 'nothing',
  nan: '.nan (not a number)',
  infinity: '.inf (infinity)',
  '-infinity': '-.inf (infinity)',
};
const noun = (kind: string) => NOUNS[kind] ?? kind;

/** The kind of a parsed YAML value, as zod names it. */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  // YAML's .nan and .inf are numbers to JavaScript, but none a setting takes.
  if (typeof value === 'number' && !Number.isFinite(value)) return Number.isNaN(value) ? 'nan' : value > 0 ? 'infinity' : '-infinity';
  return typeof value;
}

/** The value at `path` in `input`, or `undefined`. */
function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v = input;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/** What each item of a list called `key` is (`routes` → `route`). */
function itemName(key: string | undefined): string {
  if (key === 'implies' || key === 'all' || key === 'any') return 'scope';
  return key?.endsWith('s') ? key.slice(0, -1).replaceAll('_', ' ') : 'item';
}

/**
 * A value of the wrong type: what was expected, in YAML's words, what to write instead, and what
 * was found. A value is shown only where it is a number written as a string: a string setting may
 * hold a secret written as a number, and is never echoed.
 */
function typeMismatch(expected: string, received: string, path: readonly PropertyKey[], value: unknown): string {
  const last = path.at(-1);
  const key = typeof last === 'string' ? last : undefined;
  // How a value is written at this path: `port: 8080`, or `- 8080` for an item of a list.
  const at = (v: string) => (key === undefined ? `- ${v}` : `${key}: ${v}`);
  const got = `got ${noun(received)}`;
  switch (expected) {
    case 'number':
    case 'int': {
      const numeric = typeof value === 'string' && value.length <= 20 && /^-?\d+(?:\.\d+)?$/.test(value.trim());
      return numeric
        ? `expected ${noun(expected)} (write ${at((value as string).trim())}, without quotes), ${got}`
        : `expected ${noun(expected)} (digits without quotes, as in ${at(key === 'port' ? '8080' : '10')}), ${got}`;
    }
    case 'boolean':
      return `expected true or false (write ${at('true')} or ${at('false')}, without quotes), ${got}`;
    case 'string':
      return received === 'number' || received === 'boolean'
        ? `expected a string (write it in quotes, as in ${at('"…"')}), ${got}`
        : `expected a string (one value on the line, as in ${at('text')}), ${got}`;
    case 'array':
    case 'tuple':
      return `expected a list (write each ${itemName(key)} as an item starting with "- "), ${got}`;
    case 'object':
    case 'record':
    case 'map':
      return key === undefined
        ? `expected a mapping (write the item's settings as name: value, the first after "- "), ${got}`
        : `expected a mapping (write its settings on the lines below ${key}:, indented), ${got}`;
    default:
      return `expected ${noun(expected)}, ${got}`;
  }
}

/**
 * Turn zod issues into path-precise configuration issues. `input` is the value that was parsed (to
 * say what was found where a type does not match); `source`, the file it was read from.
 */
export function toConfigIssues(
  schema: z.ZodType,
  issues: readonly z.core.$ZodIssue[],
  prefix = '',
  input?: unknown,
  source?: string,
): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of issues) {
    // Checks across sections report paths written out already (see addConfigIssues).
    const written: unknown = issue.code === 'custom' ? issue.params?.configPath : undefined;
    const base = [formatPath(issue.path), typeof written === 'string' ? written : ''].filter((p) => p !== '').join('.');
    const at = prefix && base ? `${prefix}.${base}` : prefix || base;
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeys(schema, issue.path);
      for (const key of issue.keys) {
        const close = known.filter((k) => distance(k, key) <= 2).sort((a, b) => distance(a, key) - distance(b, key))[0];
        // A key can be a secret by mistake (YAML reads `{ type: static, ${TOKEN} }` as a key `${TOKEN}`).
        const name = secretShaped(key) ? `(a key of ${key.length} characters)` : key;
        const where = at ? `${at}.${name}` : name;
        out.push({
          path: where,
          message: close
            ? `unknown key ${quoted(key)}; did you mean "${close}"?`
            : `unknown key ${quoted(key)}${known.length ? `; known keys here: ${known.join(', ')}` : ''}`,
        });
      }
    } else if (issue.code === 'invalid_union' && issue.errors.length > 0) {
      // Report the branch that got furthest (fewest issues) rather than every alternative.
      const best = [...issue.errors].sort((a, b) => a.length - b.length)[0] as z.core.$ZodIssue[];
      const nested = best.map((e) => ({ ...e, path: [...issue.path, ...e.path] }));
      out.push(...toConfigIssues(schema, nested, prefix, input, source));
    } else if (issue.code === 'invalid_type' && issue.message.includes('received undefined')) {
      out.push({ path: at, message: `required; expected ${noun(issue.expected)}` });
    } else if (issue.code === 'invalid_type' && at === '' && issue.expected === 'object') {
      // The whole file (or set of options) is no mapping: a list or a scalar at the top level.
      const keys = `${knownKeys(schema, [])
        .slice(0, 3)
        .map((k) => `${k}:`)
        .join(', ')} …`;
      const got = noun(kindOf(input));
      out.push(
        source !== undefined
          ? { path: '(file)', message: `the file must be a mapping of settings (${keys}, each at the start of a line), got ${got}` }
          : { path: '', message: `expected a mapping of settings (${keys}), got ${got}` },
      );
    } else if (issue.code === 'invalid_type' && issue.message.startsWith('Invalid input')) {
      // zod's own wording (a schema's message of its own, which says more, is kept as written).
      const value = valueAt(input, issue.path);
      const received = input === undefined ? (/received (\w+)/.exec(issue.message)?.[1] ?? 'something else') : kindOf(value);
      out.push({ path: at, message: typeMismatch(issue.expected, received, issue.path, value) });
    } else if (issue.code === 'invalid_value' && issue.message.startsWith('Invalid option')) {
      // zod's own wording of an enum (`Invalid option: expected one of "a"|"b"`); a schema's own message is kept.
      const options = issue.values.map(String);
      const value = valueAt(input, issue.path);
      const text = typeof value === 'string' ? value : undefined;
      const close =
        text === undefined
          ? undefined
          : options.filter((o) => distance(o, text) <= 2).sort((a, b) => distance(a, text) - distance(b, text))[0];
      out.push({
        path: at,
        message:
          value === undefined
            ? `required; write one of ${options.join(', ')}`
            : `${quoted(value)} is not an option here; write one of ${options.join(', ')}${close ? ` (did you mean ${close}?)` : ''}`,
      });
    } else if ((issue.code === 'too_small' || issue.code === 'too_big') && /^Too (small|big): /.test(issue.message)) {
      out.push({ path: at, message: outOfRange(issue, issue.path) });
    } else {
      out.push({ path: at, message: issue.message.replace(/^Invalid input: /, '') });
    }
  }
  return out;
}

/** zod's own wording of a bound (`Too small: expected string to have >=1 characters`), in plain words. */
function outOfRange(issue: z.core.$ZodIssueTooSmall | z.core.$ZodIssueTooBig, path: readonly PropertyKey[]): string {
  const small = issue.code === 'too_small';
  const bound = Number(small ? issue.minimum : issue.maximum);
  const inclusive = issue.inclusive !== false;
  switch (issue.origin) {
    case 'string':
      if (small && bound === 1) return 'must not be empty';
      return `must be ${small ? 'at least' : 'at most'} ${bound} characters long`;
    case 'array':
    case 'set': {
      const last = path.at(-1);
      if (small && bound === 1) return `list at least one ${itemName(typeof last === 'string' ? last : undefined)}`;
      return `list ${small ? 'at least' : 'at most'} ${bound} items`;
    }
    default:
      return inclusive ? `must be ${small ? 'at least' : 'at most'} ${bound}` : `must be ${small ? 'more' : 'less'} than ${bound}`;
  }
}

/**
 * Messages that quote a value show a value taken from the environment as it is written in the file
 * (`${DATABASE_URL}`): the environment holds secrets, and errors end up in terminals and logs.
 * Every message is looked at for every such value, not only those about its own setting: a check
 * of one setting may quote another (a rule’s `claims` quote the rule’s `path`).
 */
function hideEnvValues(issues: ConfigIssue[], substitutions: readonly Substitution[]): ConfigIssue[] {
  // The longest first: a value inside a longer one is not replaced in it before the longer one is.
  const fromEnv = substitutions.filter((s) => s.fromEnv).sort((a, b) => b.value.length - a.value.length);
  if (fromEnv.length === 0) return issues;
  return issues.map((issue) => {
    let message = issue.message;
    for (const s of fromEnv) {
      // Only where the value stands on its own (quoted, or between non-alphanumerics): a short
      // value such as `y` must not be replaced inside the message's own words ("normally").
      const escaped = s.value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      message = message.replace(new RegExp(`(?<![A-Za-z0-9])${escaped}(?![A-Za-z0-9])`, 'g'), () => s.raw);
    }
    return message === issue.message ? issue : { ...issue, message };
  });
}

/**
 * The environment only holds strings: where the schema wants a number or a boolean and the value
 * is one whole reference (`port: ${PORT}`, `form_body: ${FORM:false}`), read it as one (`8080`,
 * `true`), in place; a string setting keeps `12345` a string. Without this no number could come
 * from the environment.
 * @returns whether anything was converted.
 */
function typeEnvValues(
  value: unknown,
  issues: readonly z.core.$ZodIssue[],
  substitutions: readonly Substitution[],
  prefix: string,
): boolean {
  let converted = false;
  for (const issue of issues) {
    if (issue.code !== 'invalid_type' || (issue.expected !== 'number' && issue.expected !== 'boolean')) continue;
    const base = formatPath(issue.path);
    const at = prefix && base ? `${prefix}.${base}` : prefix || base;
    const s = substitutions.find((x) => x.path === at);
    if (s === undefined || !/^\$\{[A-Za-z_][A-Za-z0-9_]*(?::[^}]*)?\}$/.test(s.raw)) continue;
    let typed: number | boolean;
    if (issue.expected === 'boolean') {
      if (s.value !== 'true' && s.value !== 'false') continue;
      typed = s.value === 'true';
    } else {
      if (!/^-?\d+(?:\.\d+)?$/.test(s.value)) continue;
      typed = Number(s.value);
    }
    let parent = value as Record<PropertyKey, unknown>;
    for (const p of issue.path.slice(0, -1)) parent = parent[p as PropertyKey] as Record<PropertyKey, unknown>;
    parent[issue.path.at(-1) as PropertyKey] = typed;
    converted = true;
  }
  return converted;
}

/**
 * A further check of a parsed value (what depends on how it is used, such as files to read), run in
 * the same pass as the schema's own checks and reading only what `ok` vouches for.
 */
export type ConfigCheck<T> = (value: T, ok: Trusted) => readonly ConfigIssue[];

/**
 * Parse `input` with `schema` after `${VAR}` substitution, then `check` it. Throws one
 * {@link ConfigError} listing every problem; returns a deep-frozen value.
 */
export function parseConfig<S extends z.ZodType>(
  schema: S,
  input: unknown,
  options: {
    env?: Readonly<Record<string, string | undefined>>;
    source?: string;
    prefix?: string;
    check?: ConfigCheck<z.output<S>> | undefined;
  } = {},
): z.output<S> {
  const issues: ConfigIssue[] = [];
  const substitutions: Substitution[] = [];
  const substituted = substituteEnv(input, options.env ?? process.env, issues, options.prefix ?? '', substitutions);
  const check = options.check;
  const checked = check ? schema.superRefine((v, ctx) => addConfigIssues(ctx, check(v, trusted(ctx.issues))), always) : schema;
  let result = checked.safeParse(substituted);
  if (!result.success && substitutions.length > 0 && typeEnvValues(substituted, result.error.issues, substitutions, options.prefix ?? '')) {
    result = checked.safeParse(substituted);
  }
  if (!result.success) {
    // A variable that is not set is reported once: the empty value it left is no second problem.
    const unset = new Set(issues.map((i) => i.path));
    const schemaIssues = toConfigIssues(schema, result.error.issues, options.prefix, substituted, options.source).filter(
      (i) => !unset.has(i.path),
    );
    issues.push(...hideEnvValues(schemaIssues, substitutions));
  }
  if (issues.length > 0) throw new ConfigError(issues, options.source);
  return deepFreeze(result.data as z.output<S>);
}
