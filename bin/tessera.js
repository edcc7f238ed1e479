#!/usr/bin/env node
// The `tessera` command. The published package runs the compiled CLI from dist/; a checkout that
// has not been built runs the TypeScript sources directly (Node >= 22.18 strips the types; the
// repository pins Node 24 for its scripts and `npx tessera`). Run `npm run build` to use dist/.
import { existsSync } from 'node:fs';

const dist = new URL('../dist/cli/main.js', import.meta.url);
let entry = dist;
if (!existsSync(dist)) {
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major < 22 || (major === 22 && minor < 18)) {
    process.stderr.write(
      `tessera: this checkout has no dist/ and Node ${process.versions.node} cannot run its TypeScript sources; ` +
        "use the repository's Node (npx tessera, npm start) or run npm run build\n",
    );
    process.exit(1);
  }
  entry = new URL('../src/cli/main.ts', import.meta.url);
}
const { run } = await import(entry.href);
await run(process.argv.slice(2));
