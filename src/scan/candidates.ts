/**
 * Finds strings in text that could be one of Tessera's tokens, fed a piece at a time so that a
 * log of any size is scanned in bounded memory, with a token split across two pieces still found:
 *
 * - a JWS compact serialization: three base64url segments, the first starting `eyJ` (the encoding
 *   of `{"`), at most `maxLength` characters (the verifier's default `max_token_size`);
 * - a refresh token: `trt_` and 43 base64url characters.
 *
 * A candidate starts after a character that is not base64url, or right after a percent-encoded
 * byte (`access_token%3DeyJ…` in a URL-encoded log, `%253DeyJ…` encoded twice, up to four times),
 * a JSON string escape (`"\neyJ…"`) or a hex escape (`\x22eyJ…`, as nginx escapes its logs).
 *
 * Candidates are only candidates: `tessera scan` verifies each before calling it a finding. The
 * search is deliberately generous within a dotted run (`a.eyJ….eyJ….c.d` yields every three
 * segments that start with `eyJ`), so a token glued to other dotted text is not missed.
 *
 * @module
 */

/** A candidate and where it starts: 1-based line, and 1-based column in characters. */
export interface Candidate {
  readonly value: string;
  readonly line: number;
  readonly column: number;
}

/** The verifier's default `max_token_size`, and the token service's own limit. */
export const MAX_CANDIDATE_LENGTH = 8192;

/** Characters before a candidate the pattern looks at: `%252525` and two hex digits is the longest. */
const CONTEXT = 9;

// A dotted run starting at `eyJ` with at least three segments, or a refresh token. Each class
// excludes `.`, so the pattern cannot backtrack across segments. It starts after a character that
// is not base64url, or after a percent-encoded byte (`%3D`, `%20`: URL-encoded logs; `%253D`, up
// to four times encoded: a URL in a URL), a JSON string escape (`\n`, `\u0022`) or a hex escape
// (`\x22`: nginx's log escaping), whose last character is.
const PATTERN =
  /(?:(?<![A-Za-z0-9_-])|(?<=%(?:25){0,3}[0-9A-Fa-f]{2})|(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4})|(?<=\\x[0-9A-Fa-f]{2}))(?:eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+){2,}|trt_[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])/g;

/**
 * A streaming candidate finder. `push` each decoded piece of a file in order, then `end`.
 *
 * @example
 * ```ts
 * const scanner = new CandidateScanner();
 * for await (const text of pieces) for (const c of scanner.push(text)) check(c);
 * for (const c of scanner.end()) check(c);
 * ```
 */
export class CandidateScanner {
  readonly #maxLength: number;
  /** Text not yet done with: the tail of what was pushed, kept for a candidate that may continue. */
  #buf = '';
  /** Absolute offset of `#buf[0]`. */
  #base = 0;
  /** Where in `#buf` matching may start; the {@link CONTEXT} characters before it are kept for the look-behind. */
  #from = 0;
  /** Absolute start of the last candidate reported (candidates are reported in start order). */
  #lastStart = -1;
  #line = 1;
  #lineStart = 0;
  #counted = 0;

  constructor(options: { readonly maxLength?: number } = {}) {
    this.#maxLength = options.maxLength ?? MAX_CANDIDATE_LENGTH;
  }

  /** Feed the next piece of text; returns the candidates it completes. */
  push(text: string): Candidate[] {
    this.#buf += text;
    return this.#scan(false);
  }

  /** End of input: the candidates that ran up to it. */
  end(): Candidate[] {
    const found = this.#scan(true);
    this.#buf = '';
    return found;
  }

  #scan(final: boolean): Candidate[] {
    const buf = this.#buf;
    const found: Candidate[] = [];
    PATTERN.lastIndex = this.#from;
    scan: for (let m = PATTERN.exec(buf); m !== null; m = PATTERN.exec(buf)) {
      const run = m[0];
      const runEnd = m.index + run.length;
      if (run.startsWith('trt_')) {
        // A match touching the end may go on in the next piece: wait for it.
        if (runEnd === buf.length && !final) break;
        this.#report(run, m.index, found);
        continue;
      }
      const starts = [m.index];
      for (let i = run.indexOf('.'); i !== -1; i = run.indexOf('.', i + 1)) starts.push(m.index + i + 1);
      for (let i = 0; i + 2 < starts.length; i++) {
        const start = starts[i] as number;
        if (!buf.startsWith('eyJ', start)) continue;
        const end = i + 3 < starts.length ? (starts[i + 3] as number) - 1 : runEnd;
        // Three segments followed by a dot are complete; the last ones may go on in the next piece.
        if (end === buf.length && !final) break scan;
        if (end - start <= this.#maxLength) this.#report(buf.slice(start, end), start, found);
      }
    }
    // Keep what a candidate still open at the end could span, plus the context before it.
    const keep = final ? buf.length : Math.max(0, buf.length - this.#maxLength - CONTEXT);
    this.#advance(this.#base + keep);
    this.#buf = buf.slice(keep);
    this.#base += keep;
    this.#from = this.#buf.length > 0 && keep > 0 ? CONTEXT : 0;
    return found;
  }

  #report(value: string, index: number, found: Candidate[]): void {
    const start = this.#base + index;
    // Text kept for the next piece is searched again: report each candidate once.
    if (start <= this.#lastStart) return;
    this.#lastStart = start;
    this.#advance(start);
    found.push({ value, line: this.#line, column: start - this.#lineStart + 1 });
  }

  /**
   * Count lines up to the absolute offset `to` (never backwards). Only the text before `to` is
   * looked at: searching past it for the next newline would go to the end of the buffer for every
   * candidate of a long line (a minified bundle, a one-line JSON dump), quadratic in the piece.
   */
  #advance(to: number): void {
    if (to <= this.#counted) return;
    const buf = this.#buf;
    for (let i = this.#counted - this.#base; i < to - this.#base; i++) {
      if (buf.charCodeAt(i) !== 10) continue;
      this.#line++;
      this.#lineStart = this.#base + i + 1;
    }
    this.#counted = to;
  }
}
