#!/usr/bin/env node
// Entry point for the published package: runs the compiled CLI from dist/.
import { main } from '../dist/cli/main.js';

await main(process.argv.slice(2));
