/**
 * Counting the case mappings code makes, for the hostile-path tests: a count, not a timing, says
 * what reading a path costs.
 */

/** What `f` returns, and how many `toLowerCase`/`toUpperCase` calls it made. */
export function caseMappings<T>(f: () => T): [T, number] {
  const { toLowerCase, toUpperCase } = String.prototype;
  let calls = 0;
  String.prototype.toLowerCase = function (this: string) {
    calls++;
    return toLowerCase.call(this);
  };
  String.prototype.toUpperCase = function (this: string) {
    calls++;
    return toUpperCase.call(this);
  };
  try {
    return [f(), calls];
  } finally {
    String.prototype.toLowerCase = toLowerCase;
    String.prototype.toUpperCase = toUpperCase;
  }
}
