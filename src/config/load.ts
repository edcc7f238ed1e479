/**
 * Load `tessera.yaml`: parse YAML (syntax errors name the line), substitute `${VAR}`, validate
 * against the schema (every problem with its path), freeze.
 */
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { ConfigError } from '../core/errors.ts';
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
    throw new ConfigError(
      doc.errors.map((e) => ({
        path: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '(yaml)',
        message: e.message.split('\n')[0] ?? e.message,
      })),
      source,
    );
  }
  return parseConfig(configSchema, doc.toJS() ?? {}, { env, source });
}

/** Read and parse a configuration file. */
export function loadConfigFile(file: string, env: Readonly<Record<string, string | undefined>> = process.env): TesseraConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([{ path: '(file)', message: `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}` }], file);
  }
  return parseConfigText(text, file, env);
}
