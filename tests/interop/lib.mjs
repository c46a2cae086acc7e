// Shared helpers for verify.mjs and fleet.mjs. Verification is done by the
// independent `jose` library only; nothing here touches kmsd code.
import { jwtVerify, createRemoteJWKSet, customFetch } from 'jose';

export const ALGORITHMS = ['RS256', 'EdDSA'];

// Parses `<jwksUrl> <issuer> <audience> [rest...]`. `--audience-any` (anywhere)
// takes the place of the <audience> argument and disables the audience check.
// `--now=<unix seconds>` verifies as of that instant (jose's currentDate).
// Throws a string (the usage error) on bad input.
export function parseArgs(argv, usage) {
  let audienceAny = false;
  let now;
  const pos = [];
  for (const a of argv) {
    if (a === '--audience-any') audienceAny = true;
    else if (a.startsWith('--now=')) now = Number(a.slice(6));
    else if (a.startsWith('--')) throw `unknown option ${a}\n${usage}`;
    else pos.push(a);
  }
  const need = audienceAny ? 2 : 3;
  if (pos.length < need) throw usage;
  const [jwksUrl, issuer] = pos;
  let url;
  try {
    url = new URL(jwksUrl);
  } catch {
    throw `invalid jwksUrl ${JSON.stringify(jwksUrl)}\n${usage}`;
  }
  return { url, issuer, audience: audienceAny ? undefined : pos[2], now, rest: pos.slice(need) };
}

// One shared remote JWKS getter; verify() never throws, it returns the JSON
// result object. `jwksUnavailable` is true when the getter failed and the set
// has never been loaded successfully (i.e. the JWKS could not be fetched).
export function makeVerifier({ url, issuer, audience, now, cooldownDuration }) {
  const stats = { jwksFetches: 0 };
  const jwks = createRemoteJWKSet(url, {
    cooldownDuration,
    cacheMaxAge: 600000,
    [customFetch]: (...args) => {
      stats.jwksFetches += 1;
      return fetch(...args);
    },
  });
  const options = { issuer, typ: 'JWT', clockTolerance: 30, algorithms: ALGORITHMS };
  if (audience !== undefined) options.audience = audience;
  if (now !== undefined) options.currentDate = new Date(now * 1000);

  async function verify(token) {
    let getterFailedUnloaded = false;
    const getKey = async (header, jws) => {
      try {
        return await jwks(header, jws);
      } catch (err) {
        if (jwks.jwks() === undefined) getterFailedUnloaded = true;
        throw err;
      }
    };
    try {
      const { payload, protectedHeader } = await jwtVerify(token, getKey, options);
      return { ok: true, alg: protectedHeader.alg, kid: protectedHeader.kid, payload };
    } catch (err) {
      return failure(err, getterFailedUnloaded);
    }
  }
  return { verify, stats, jwks };
}

function failure(err, jwksUnavailable) {
  let message = String(err?.message ?? err);
  // fetch() failures are bare TypeErrors ("fetch failed") with the reason in .cause
  if (err?.cause?.message && !message.includes(err.cause.message)) message += `: ${err.cause.message}`;
  let code = typeof err?.code === 'string' ? err.code : undefined;
  if (jwksUnavailable && code !== 'ERR_JWKS_TIMEOUT' && code !== 'ERR_JWKS_INVALID') {
    code = 'ERR_JWKS_FETCH_FAILED'; // not a jose code: JWKS never loaded (conn refused, non-200, bad JSON...)
  }
  const out = { ok: false, code: code ?? err?.name ?? 'ERR_UNKNOWN', message };
  if (err?.claim !== undefined) out.claim = err.claim; // JWTClaimValidationFailed / JWTExpired
  if (jwksUnavailable) out.jwksUnavailable = true;
  return out;
}

export function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}
