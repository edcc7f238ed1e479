/**
 * What the process writes on stderr, kept instead of shown (or also shown, `passThrough`), until
 * `restore()`: for tests of the JSON lines `tessera serve` and its logger write there.
 */
export interface CapturedStderr {
  /** The chunks written so far, as strings. */
  readonly chunks: string[];
  /** All that was written so far. */
  text(): string;
  /** The JSON lines among them, parsed. */
  jsonLines(): Record<string, unknown>[];
  /** Put the real `process.stderr.write` back (call it in a `finally`). */
  restore(): void;
}

export function captureStderr(options: { readonly passThrough?: boolean } = {}): CapturedStderr {
  const chunks: string[] = [];
  const write = process.stderr.write;
  const real = write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
    chunks.push(String(chunk));
    return options.passThrough ? real(chunk, ...rest) : true;
  }) as typeof process.stderr.write;
  const text = () => chunks.join('');
  return {
    chunks,
    text,
    jsonLines: () =>
      text()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    restore: () => {
      process.stderr.write = write;
    },
  };
}
