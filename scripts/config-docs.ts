/**
 * Generate docs/configuration.md from the zod schema (src/config/schema.ts, which composes the
 * verifier, token service, store, gateway and audit schemas): the schema is the single source of
 * defaults, validation and documentation. `npm run docs` writes the file; a test fails when the
 * committed file is stale.
 */
import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { formatDuration } from '../src/config/duration.ts';
import { MAX_CONFIG_BYTES, MAX_EXPANDED_BYTES } from '../src/config/load.ts';
import { configSchema } from '../src/config/schema.ts';
import { verifierFields } from '../src/config/verifier-schema.ts';

const mib = (bytes: number) => `${bytes / 1024 / 1024} MiB`;

interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  format?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  additionalProperties?: JsonSchema | boolean;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  const?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  minItems?: number;
  minLength?: number;
}

interface Row {
  key: string;
  type: string;
  required: boolean;
  default: string;
  description: string;
}

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function isObject(s: JsonSchema): boolean {
  return s.type === 'object' && s.properties !== undefined;
}

/** The `type` values of a discriminated union (`credential: { type: static, … }`), else undefined. */
function discriminated(s: JsonSchema): { value: string; branch: JsonSchema }[] | undefined {
  const branches = s.oneOf ?? [];
  const out = branches.map((branch) => ({ value: branch.properties?.type?.const, branch }));
  if (out.length === 0 || out.some((b) => typeof b.value !== 'string')) return undefined;
  return out as { value: string; branch: JsonSchema }[];
}

function typeOf(s: JsonSchema): string {
  if (s.format === 'duration') return s.maximum !== undefined ? `duration ≤ ${formatDuration(s.maximum)}` : 'duration';
  if (discriminated(s)) return 'object';
  if (s.anyOf) {
    const parts = s.anyOf.filter((b) => b.type !== 'null').map(typeOf);
    return [...new Set(parts)].join(' or ');
  }
  if (s.enum) return `one of ${s.enum.map((v) => `\`${String(v)}\``).join(', ')}`;
  const type = Array.isArray(s.type) ? s.type.join(' or ') : s.type;
  if (type === 'array') return `list of ${s.items ? typeOf(s.items) : 'values'}${s.minItems ? ` (at least ${s.minItems})` : ''}`;
  if (type === 'object') return s.properties ? 'object' : 'map';
  if (type === 'string' && s.format === 'uri') return 'URL';
  if (type === 'integer' || type === 'number') {
    // zod's .int() adds the safe-integer bounds; they say nothing to a reader.
    const min = s.minimum !== undefined && s.minimum > Number.MIN_SAFE_INTEGER ? s.minimum : undefined;
    const max = s.maximum !== undefined && s.maximum < Number.MAX_SAFE_INTEGER ? s.maximum : undefined;
    if (min !== undefined && max !== undefined) return `${type} ${min}–${max}`;
    if (min !== undefined) return `${type} ≥ ${min}`;
    if (s.exclusiveMinimum !== undefined) return `${type} > ${s.exclusiveMinimum}`;
    if (max !== undefined) return `${type} ≤ ${max}`;
    return type;
  }
  return type ?? 'any';
}

function defaultOf(s: JsonSchema): string {
  if (s.default === undefined) return '';
  if (typeof s.default === 'object' && s.default !== null && !Array.isArray(s.default) && Object.keys(s.default).length === 0) return '';
  return `\`${JSON.stringify(s.default)}\``;
}

function walk(s: JsonSchema, key: string, required: boolean, rows: Row[]): void {
  rows.push({ key, type: typeOf(s), required, default: defaultOf(s), description: s.description ?? '' });
  if (isObject(s)) {
    for (const [name, child] of Object.entries(s.properties ?? {}))
      walk(child, `${key}.${name}`, s.required?.includes(name) ?? false, rows);
  } else if (s.type === 'array' && s.items && (isObject(s.items) || s.items.anyOf)) {
    walkBranches(s.items, `${key}[]`, rows);
  } else if (s.type === 'object' && typeof s.additionalProperties === 'object') {
    walkBranches(s.additionalProperties, `${key}.<name>`, rows);
  } else if (discriminated(s)) {
    // One shape per `type`: the type first, then each shape's other keys, marked with their type.
    const shapes = discriminated(s) ?? [];
    const says = shapes
      .filter((b) => b.branch.properties?.type?.description)
      .map((b) => `\`${b.value}\`: ${b.branch.properties?.type?.description}`);
    rows.push({
      key: `${key}.type`,
      type: `one of ${shapes.map((b) => `\`${b.value}\``).join(', ')}`,
      required: true,
      default: '',
      description: says.join(' '),
    });
    for (const { value, branch } of shapes) {
      for (const [name, child] of Object.entries(branch.properties ?? {})) {
        if (name === 'type') continue;
        const before = rows.length;
        walk(child, `${key}.${name}`, branch.required?.includes(name) ?? false, rows);
        const row = rows[before] as Row;
        row.description = `(\`type: ${value}\`) ${row.description}`;
      }
    }
  } else if (s.anyOf) {
    // Alternative shapes ({file} or {keys}): list every member, none of them required on its own.
    for (const branch of s.anyOf) {
      if (isObject(branch)) for (const [name, child] of Object.entries(branch.properties ?? {})) walk(child, `${key}.${name}`, false, rows);
    }
  }
}

/** Items of a list or values of a map: document their members directly under `key`. */
function walkBranches(s: JsonSchema, key: string, rows: Row[]): void {
  for (const branch of s.anyOf ?? [s]) {
    if (!isObject(branch)) continue;
    for (const [name, child] of Object.entries(branch.properties ?? {}))
      walk(child, `${key}.${name}`, branch.required?.includes(name) ?? false, rows);
  }
}

/** Render the whole reference. */
export function renderConfigurationDocs(): string {
  const root = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  let out = `# Configuration reference

<!-- Generated by \`npm run docs\` (scripts/config-docs.ts) from the zod schema in src/config/. Do not edit by hand. -->

Tessera reads \`tessera.yaml\`; \`createVerifier(options)\` accepts the verifier's part of the same
shape (${Object.keys(verifierFields)
    .map((k) => `\`${k}\``)
    .join(', ')}).

- Any string value may reference the environment: \`\${VAR}\`, or \`\${VAR:default}\` when unset or empty
  (\`\${VAR:-default}\`, the bash and docker-compose spelling, is the same: \`\${PORT:-8080}\` is \`8080\`,
  \`\${VAR:-}\` an empty default); \`$\${\` writes a literal \`\${\`; any other \`\${\` that is not a
  reference (\`\${VAR\`, \`\${VAR-x}\`) is an error. Substitution applies to values, never to YAML structure
  nor to keys (a key holding \`\${\` is an error).
  A value that is one whole reference is read as a number or a boolean where the setting is one
  (\`port: \${PORT}\`). A variable the environment does not set is taken from
  \`<data_dir>/secrets.env\` (\`NAME=value\` lines, read by the \`tessera\` commands); one set in neither,
  without a default, is an error. A \`\${VAR:default}\` is written in the file: keep secrets out of defaults.
- A **duration** is a number of seconds or a string with a unit: \`500ms\`, \`30s\`, \`10m\`, \`24h\`, \`7d\`.
  Each has a maximum (\`duration ≤ 24d\` below): a longer one is refused with the allowed range, so
  that no expiry computed from it and no timer it runs can overflow.
- A value of the wrong type says what to write instead: \`server.port: expected a number (write
  port: 8080, without quotes), got a string\`, \`gateway.routes: expected a list (write each route as
  an item starting with "- "), got a mapping\`.
- Unknown keys are errors (with a "did you mean" suggestion). Every problem is reported at once with
  its exact path, e.g. \`issuers[0].jwks_uri\`, also those found by comparing settings (a rule's
  scopes against \`scopes\`, a route's \`auth\` against the verifiers configured). A comparison reads
  only settings that are valid themselves: a rule's scopes are compared with \`scopes\` once
  \`scopes\` is valid. Found only once the rest of \`tessera.yaml\` is valid, when the verifiers are
  built: a \`jwks.file\` that cannot be used (\`createVerifier\` reads key files with the rest).
  \`createGateway\` refuses an \`exchange\` route without an \`upstreamTokenIssuer\` after the file
  loaded; \`tessera gateway\` and \`tessera serve\` report that with the rest.
- \`[]\` in a key stands for each element of a list, \`<name>\` for each key of a map.
- The file is UTF-8 and at most ${mib(MAX_CONFIG_BYTES)}; one every user may write (mode \`o+w\`, also through a
  symlink), one in a directory every user may write without the sticky bit (as \`/tmp\` has; a
  read-only mount, such as a Kubernetes ConfigMap volume's 0777 directory, is allowed: mount only a
  host directory no other user can write, since read-only here does not stop them there), and one
  owned by a user other than the one Tessera runs as and root are refused, naming the \`chmod\` or
  \`chown\` to run (a group write bit is allowed). Relative paths in it (\`data_dir\`, \`audit.file\`,
  \`issuers[].jwks.file\`) are read from its directory, not the working directory. YAML anchors and aliases may repeat a node, but
  the configuration they expand to is at most ${mib(MAX_EXPANDED_BYTES)}, and aliases may not form a cycle.
- The file is read as YAML 1.2 (core schema), also under a \`%YAML 1.1\` directive: \`012\` is twelve,
  \`yes\` a string. A tag other than the core ones (\`!!str\`, \`!!int\`, \`!!bool\`, \`!!map\`…), such as
  \`!!binary\`, \`!!timestamp\` or \`!!js/function\`, an unknown directive, a key that is a list or a
  mapping, a merge key (\`<<\`), a key written twice in one mapping (both places named) and a second
  document (\`---\`) are errors naming the line, never read as some other value. A number is
  written in decimal digits: \`0x1F90\`, \`0o17620\` and \`8.08e3\` (which YAML reads as 8080) are
  errors naming the setting and the decimal to write (a fraction such as \`1.16e-5\` is read).
`;
  for (const [name, section] of Object.entries(root.properties ?? {})) {
    const rows: Row[] = [];
    walk(section, name, root.required?.includes(name) ?? false, rows);
    out += `\n## \`${name}\`\n\n`;
    out += '| key | type | default | description |\n|---|---|---|---|\n';
    for (const r of rows) {
      out += `| \`${r.key}\` | ${cell(r.type)}${r.required ? ', **required**' : ''} | ${cell(r.default)} | ${cell(r.description)} |\n`;
    }
  }
  return out;
}

if (import.meta.main) {
  const target = new URL('../docs/configuration.md', import.meta.url);
  writeFileSync(target, renderConfigurationDocs());
  process.stdout.write(`wrote ${target.pathname}\n`);
}
