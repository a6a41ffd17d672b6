#!/usr/bin/env node
// xl-ts: xl's global options may come before the command (`xl-ts -v --root DIR list`);
// src/cli/main.ts moves them after it and runs the command with oclif.
import {main} from '../dist/cli/main.js'

await main(process.argv.slice(2), import.meta.url)
