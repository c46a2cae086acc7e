#!/usr/bin/env node
// node fleet.mjs <jwksUrl> <issuer> <audience|--audience-any>
// Long-running "verifier fleet": reads one token per line from stdin (blank
// lines ignored) and prints one JSON result line per token, flushed
// immediately. One long-lived remote JWKS (cooldownDuration 2000 ms): on an
// unknown kid it refetches at most once per cooldown, like a real verifier.
// Result lines have the verify.mjs shape plus "jwksFetches" (total HTTP
// fetches of the JWKS so far). Never exits on verification/fetch failures.
import { createInterface } from 'node:readline';
import { parseArgs, makeVerifier, emit } from './lib.mjs';

const USAGE =
  'usage: node fleet.mjs <jwksUrl> <issuer> <audience>   (tokens on stdin, one per line)\n' +
  '       node fleet.mjs <jwksUrl> <issuer> --audience-any';

let args;
try {
  args = parseArgs(process.argv.slice(2), USAGE);
  if (args.rest.length !== 0) throw `unexpected extra arguments\n${USAGE}`;
} catch (msg) {
  process.stderr.write(`${msg}\n`);
  process.exit(2);
}

process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

const { verify, stats } = makeVerifier({ ...args, cooldownDuration: 2000 });
const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  const token = line.trim();
  if (token === '') continue;
  const result = await verify(token);
  emit({ ...result, jwksFetches: stats.jwksFetches });
}
