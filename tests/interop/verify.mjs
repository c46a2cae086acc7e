#!/usr/bin/env node
// node verify.mjs <jwksUrl> <issuer> <audience|--audience-any> <token> [<token> ...]
// Prints one JSON line per token, in order. Exit 0 even if tokens fail;
// exit 2 on usage errors or when the JWKS cannot be fetched on the first token.
import { parseArgs, makeVerifier, emit } from './lib.mjs';

const USAGE =
  'usage: node verify.mjs <jwksUrl> <issuer> <audience> <token> [<token> ...]\n' +
  '       node verify.mjs <jwksUrl> <issuer> --audience-any <token> [<token> ...]';

let args;
try {
  args = parseArgs(process.argv.slice(2), USAGE);
  if (args.rest.length === 0) throw USAGE;
} catch (msg) {
  process.stderr.write(`${msg}\n`);
  process.exit(2);
}

const { verify } = makeVerifier({ ...args, cooldownDuration: 30000 });
let exitCode = 0;
for (const [i, token] of args.rest.entries()) {
  const result = await verify(token);
  emit(result);
  if (i === 0 && result.jwksUnavailable) {
    process.stderr.write(`verify.mjs: cannot fetch JWKS from ${args.url.href}: ${result.message}\n`);
    exitCode = 2;
    break;
  }
}
process.exitCode = exitCode;
