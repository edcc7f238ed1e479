/**
 * Load `tessera.yaml`: parse YAML (syntax errors name the line), substitute `${VAR}`, validate
 * against the schema (every problem with its path), freeze.
 */
import { isUtf8 } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { ConfigError, type ConfigIssue } from '../core/errors.ts';
import { parseConfig } from './parse.ts';
import { configSchema, type TesseraConfig } from './schema.ts';

/** Parse configuration text. `source` names the file in error messages. */
export function parseConfigText(
  text: string,
  source = 'tessera.yaml',
  env: Readonly<Record<string, string | undefined>> = process.env,
): TesseraConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    // One problem per line: the first error on a line causes the others after it. The position is
    // in the path already; the message's own copy of it ends in the colon of a code frame.
    const lines = new Set<number>();
    const issues: ConfigIssue[] = [];
    for (const e of doc.errors) {
      const line = e.linePos?.[0].line;
      if (line !== undefined && lines.has(line)) continue;
      if (line !== undefined) lines.add(line);
      // `url: ${VAR}` inside `{ … }` or `[ … ]`: the `{` after `$` opens a flow mapping.
      const unquotedVar = text[e.pos[0] - 1] === '$' && text[e.pos[0]] === '{';
      issues.push({
        path: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '(yaml)',
        message: unquotedVar
          ? 'a ${VAR} inside { … } or [ … ] must be quoted: write "${VAR}"'
          : (e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, ''),
      });
    }
    throw new ConfigError(issues, source);
  }
  let value: unknown;
  try {
    value = doc.toJS();
    // An alias inside the node it names (`a: &x [*x]`) builds a cycle, which no setting can be.
    JSON.stringify(value);
  } catch (e) {
    const message =
      e instanceof TypeError
        ? 'an alias refers to a node that contains it; YAML aliases must not form a cycle'
        : /excessive alias count/i.test((e as Error)?.message ?? '')
          ? 'too many alias expansions (the YAML aliases nest too deep); write the values out'
          : (String((e as Error)?.message ?? 'unreadable YAML').split('\n')[0] as string);
    throw new ConfigError([{ path: '(yaml)', message }], source);
  }
  return parseConfig(configSchema, value ?? {}, { env, source });
}

/** Read and parse a configuration file. */
export function loadConfigFile(file: string, env: Readonly<Record<string, string | undefined>> = process.env): TesseraConfig {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    throw new ConfigError([{ path: '(file)', message: `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}` }], file);
  }
  const text = bytes.toString('utf8');
  // Decoding would replace bad bytes with U+FFFD and carry on: a value written in another encoding
  // would silently become another value.
  if (text.includes('\uFFFD') && !isUtf8(bytes)) {
    const line = text.slice(0, text.indexOf('\uFFFD')).split('\n').length;
    throw new ConfigError([{ path: `line ${line}`, message: 'not valid UTF-8; save the file as UTF-8' }], file);
  }
  return parseConfigText(text, file, env);
}
