/**
 * Text another party chose (a JWKS publisher's `kid`, an MCP tool name, a value from the audit
 * trail), made safe to print or to hand to any logger: control characters written as escapes.
 *
 * @module
 */

// C0 and C1 controls, DEL, the line and paragraph separators (a line break to editors and many
// readers the output is pasted into), and the bidirectional overrides and isolates (which reorder
// what follows).
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this escapes
const CONTROLS = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * One line made safe to print: control characters written as escapes (`\n`, `\x1b`, `\u202e`).
 * Printed raw, a newline would forge a line and an ANSI or OSC sequence rewrite the operator's
 * screen. Idempotent (a backslash is kept as it is), so text escaped twice reads the same.
 *
 * @example
 * ```ts
 * printable('kid\u001b[2J'); // 'kid\\x1b[2J'
 * ```
 */
export function printable(line: string): string {
  return line.replace(CONTROLS, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
