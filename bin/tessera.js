#!/usr/bin/env node
// The `tessera` command. The published package (no src/) runs the compiled CLI from dist/. A
// checkout runs its TypeScript sources whenever this Node strips types (22.18+, or 22.13+ with
// --experimental-strip-types; the repository pins Node 24 for its scripts and `npx tessera`), even
// when a dist/ is there: `npm pack` leaves one behind, stale as soon as a source changes. On an
// older Node a checkout needs `npm run build` first.
import { existsSync } from 'node:fs';
import { holdEarlySighup } from './early-sighup.js';
import { quietSqliteWarning } from './quiet-sqlite-warning.js';

const dist = new URL('../dist/cli/main.js', import.meta.url);
const src = new URL('../src/cli/main.ts', import.meta.url);
let entry = dist;
if (existsSync(src) && process.features.typescript) entry = src;
else if (!existsSync(dist)) {
  process.stderr.write(
    `tessera: this checkout has no dist/ and Node ${process.versions.node} cannot run its TypeScript sources; ` +
      "use the repository's Node (npx tessera, npm start) or run npm run build\n",
  );
  process.exit(1);
}
holdEarlySighup(process.argv.slice(2));
// Before the CLI loads node:sqlite (see quiet-sqlite-warning.js): Node 22 warns then, even for --help.
quietSqliteWarning();
const { run } = await import(entry.href);
await run(process.argv.slice(2));
