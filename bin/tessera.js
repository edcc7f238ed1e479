#!/usr/bin/env node
// The `tessera` command. The published package runs the compiled CLI from dist/; a checkout that
// has not been built runs the TypeScript sources directly (Node strips the types; the repository
// pins Node 24 for its scripts and `npx tessera`).
import { existsSync } from 'node:fs';

const dist = new URL('../dist/cli/main.js', import.meta.url);
const entry = existsSync(dist) ? dist : new URL('../src/cli/main.ts', import.meta.url);
const { main } = await import(entry.href);
await main(process.argv.slice(2));
