"""Long-running JWT verifiers for the rotation fleet test, built on PyJWT.

    python gateway.py <mode> <jwks_url> <issuer> <audience> [<cooldown seconds>]

Reads one token per line on stdin, prints one JSON line per token:
{"ok": true, "kid": ...} or {"ok": false, "error": ...}.

Modes:
  gateway   caches the JWKS for exactly the Cache-Control max-age kmsd sent
            and never refetches early on an unknown kid (as many API gateways
            do): a token whose kid is not in the cached set fails.
  fixed     like gateway, but caches the set for a fixed lifetime (the 5th
            argument, seconds) whatever max-age says: a verifier whose cache
            outlives kmsd's publish lead.
  pyjwk     PyJWT's own PyJWKClient with its default cache (5 min), which
            refetches the set on an unknown kid at most once per cooldown
            (PyJWT's default is 30 s; the fleet test passes one shorter than
            kmsd's publish lead, as kmsd's policy requires of verifiers).
"""
import json
import re
import sys
import time
import urllib.request

import jwt

LEEWAY = 30


class Gateway:
    def __init__(self, url, fixed_lifetime=None):
        self.url = url
        self.fixed_lifetime = fixed_lifetime
        self.keys = {}
        self.expires = 0.0
        self.fetches = 0

    def refresh(self):
        with urllib.request.urlopen(self.url, timeout=5) as resp:
            cache = resp.headers.get("Cache-Control", "")
            body = json.load(resp)
        self.fetches += 1
        m = re.search(r"max-age=(\d+)", cache)
        lifetime = self.fixed_lifetime if self.fixed_lifetime is not None else (int(m.group(1)) if m else 0)
        self.expires = time.monotonic() + lifetime
        self.keys = {k["kid"]: jwt.PyJWK(k) for k in body["keys"]}

    def key_for(self, token):
        if time.monotonic() >= self.expires:
            self.refresh()
        kid = jwt.get_unverified_header(token).get("kid")
        if kid not in self.keys:
            raise LookupError(f"unknown kid {kid} (cached set, no refetch)")
        return self.keys[kid].key


class PyJwk:
    def __init__(self, url, cooldown):
        self.client = jwt.PyJWKClient(url, cooldown_duration=cooldown)

    def key_for(self, token):
        return self.client.get_signing_key_from_jwt(token).key


def main():
    mode, url, issuer, audience = sys.argv[1:5]
    cooldown = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
    if mode == "gateway":
        verifier = Gateway(url)
    elif mode == "fixed":
        verifier = Gateway(url, fixed_lifetime=cooldown)
    else:
        verifier = PyJwk(url, cooldown)
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        try:
            key = verifier.key_for(token)
            claims = jwt.decode(
                token, key, algorithms=["RS256", "EdDSA"], audience=audience, issuer=issuer, leeway=LEEWAY
            )
            out = {"ok": True, "kid": jwt.get_unverified_header(token)["kid"], "sub": claims["sub"]}
        except Exception as e:  # noqa: BLE001 - every failure is a result line
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
