#!/usr/bin/env python3
"""Self-test for tests/kms/emulator.py.

Starts the emulator twice as a subprocess -- stock moto (--stock) and patched --
and runs the same checks against each over HTTP on 127.0.0.1, using botocore
(a moto dependency) as the client and `cryptography` to verify every signature
locally against the DER SubjectPublicKeyInfo from GetPublicKey.

Checks are grouped:
  F1..F5  one group per corrected moto fault; each should FAIL on stock moto
  base    moto behaviour the patch must keep; should PASS on both

Exit 0 only if every patched check passes, every stock 'base' check passes,
and every fault F1..F5 is reproduced on stock (at least one of its checks fails).
Run with the interpreter of the venv that has requirements.txt installed:
    python tests/kms/selftest.py
"""

from __future__ import annotations

import hashlib
import os
import selectors
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import load_der_public_key

EMULATOR = Path(__file__).resolve().parent / "emulator.py"
READY_PREFIX = "KMS_EMULATOR_READY port="
MSG = b"kmsd selftest message: the quick brown fox jumps over the lazy dog"
FAULTS = {
    "F1": "ECC_NIST_EDWARDS25519 / ED25519_SHA_512 missing",
    "F2": "MessageType=DIGEST ignored (digest hashed again)",
    "F3": "RSASSA_PSS salt length is max, not digest length",
    "F4": "Disabled / PendingDeletion keys still usable",
    "F5": "wrong key usage -> ValidationException, not InvalidKeyUsageException",
}

for k, v in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ[k] = v


# ----------------------------------------------------------------------------
# emulator process
# ----------------------------------------------------------------------------
class Emulator:
    def __init__(self, stock: bool):
        self.stock = stock
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 60.0) -> None:
        cmd = [sys.executable, str(EMULATOR), "--port", "0"]
        if self.stock:
            cmd.append("--stock")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"emulator exited early (rc={self.proc.wait()})")
            if line.startswith(READY_PREFIX):
                self.port = int(line[len(READY_PREFIX):].strip())
                return
        self.stop()
        raise RuntimeError("emulator did not print its ready line in time")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


def kms_client(port: int, region: str = "us-east-1"):
    return boto3.client(
        "kms",
        region_name=region,
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"max_attempts": 1, "mode": "standard"},
                      connect_timeout=5, read_timeout=30),
    )


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
class CheckFailed(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


def expect_error(fn, code: str, status: int = 400) -> None:
    try:
        fn()
    except ClientError as e:
        got = e.response.get("Error", {}).get("Code")
        got_status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        expect(got == code and got_status == status,
               f"expected {code}/{status}, got {got}/{got_status}")
        return
    raise CheckFailed(f"expected {code}, call succeeded")


def make_key(c, spec: str, usage: str = "SIGN_VERIFY", **kw) -> str:
    return c.create_key(KeySpec=spec, KeyUsage=usage, **kw)["KeyMetadata"]["KeyId"]


def public_key(c, key_id: str):
    return load_der_public_key(c.get_public_key(KeyId=key_id)["PublicKey"])


def sign(c, key_id, message, alg, mtype="RAW") -> bytes:
    return c.sign(KeyId=key_id, Message=message, MessageType=mtype,
                  SigningAlgorithm=alg)["Signature"]


def kms_verify(c, key_id, message, sig, alg, mtype="RAW") -> bool:
    return c.verify(KeyId=key_id, Message=message, MessageType=mtype,
                    Signature=sig, SigningAlgorithm=alg)["SignatureValid"]


def local_ok(fn) -> bool:
    try:
        fn()
        return True
    except InvalidSignature:
        return False


def pss(h):
    return padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)


# ----------------------------------------------------------------------------
# checks: each takes (client, port) and raises on failure
# ----------------------------------------------------------------------------
CHECKS = []


def check(group: str, name: str):
    def deco(fn):
        CHECKS.append((group, name, fn))
        return fn
    return deco


# F1: Ed25519 ---------------------------------------------------------------
@check("F1", "CreateKey ECC_NIST_EDWARDS25519 + DescribeKey SigningAlgorithms")
def _(c, port):
    meta = c.create_key(KeySpec="ECC_NIST_EDWARDS25519",
                        KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    expect(meta["KeySpec"] == "ECC_NIST_EDWARDS25519", f"KeySpec {meta['KeySpec']}")
    algs = c.describe_key(KeyId=meta["KeyId"])["KeyMetadata"].get("SigningAlgorithms")
    expect(algs == ["ED25519_SHA_512"], f"SigningAlgorithms {algs}")


@check("F1", "Ed25519 GetPublicKey DER SPKI; Sign RAW verifies locally + via KMS")
def _(c, port):
    kid = make_key(c, "ECC_NIST_EDWARDS25519")
    pub = public_key(c, kid)
    expect(isinstance(pub, ed25519.Ed25519PublicKey), f"public key is {type(pub)}")
    sig = sign(c, kid, MSG, "ED25519_SHA_512")
    expect(len(sig) == 64, f"signature length {len(sig)}")
    expect(local_ok(lambda: pub.verify(sig, MSG)), "local Ed25519 verify failed")
    expect(kms_verify(c, kid, MSG, sig, "ED25519_SHA_512"), "KMS Verify false")
    expect(not kms_verify(c, kid, MSG + b"x", sig, "ED25519_SHA_512"),
           "KMS Verify accepted a tampered message")


@check("F1", "Ed25519 message of 4096 ok, 4097 bytes -> ValidationException")
def _(c, port):
    kid = make_key(c, "ECC_NIST_EDWARDS25519")
    pub = public_key(c, kid)
    big = os.urandom(4096)
    sig = sign(c, kid, big, "ED25519_SHA_512")
    expect(local_ok(lambda: pub.verify(sig, big)), "local verify of 4096-byte msg")
    expect_error(lambda: sign(c, kid, big + b"!", "ED25519_SHA_512"),
                 "ValidationException")


@check("F1", "ED25519_SHA_512 with MessageType=DIGEST -> ValidationException")
def _(c, port):
    kid = make_key(c, "ECC_NIST_EDWARDS25519")
    expect_error(lambda: sign(c, kid, hashlib.sha512(MSG).digest(),
                              "ED25519_SHA_512", "DIGEST"), "ValidationException")


# F2: DIGEST ----------------------------------------------------------------
@check("F2", "RSA_2048 RSASSA_PKCS1_V1_5_SHA_256 DIGEST verifies locally + via KMS")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    pub = public_key(c, kid)
    d = hashlib.sha256(MSG).digest()
    sig = sign(c, kid, d, "RSASSA_PKCS1_V1_5_SHA_256", "DIGEST")
    expect(local_ok(lambda: pub.verify(sig, d, padding.PKCS1v15(),
                                       Prehashed(hashes.SHA256()))),
           "local verify of digest signature failed")
    expect(local_ok(lambda: pub.verify(sig, MSG, padding.PKCS1v15(), hashes.SHA256())),
           "signature does not verify over the original message")
    expect(kms_verify(c, kid, d, sig, "RSASSA_PKCS1_V1_5_SHA_256", "DIGEST"),
           "KMS Verify(DIGEST) false")


@check("F2", "ECC_NIST_P256 ECDSA_SHA_256 DIGEST (DER) verifies locally + via KMS")
def _(c, port):
    kid = make_key(c, "ECC_NIST_P256")
    pub = public_key(c, kid)
    expect(isinstance(pub, ec.EllipticCurvePublicKey)
           and pub.curve.name == "secp256r1", "not a P-256 key")
    d = hashlib.sha256(MSG).digest()
    sig = sign(c, kid, d, "ECDSA_SHA_256", "DIGEST")
    decode_dss_signature(sig)  # raises if not DER
    expect(local_ok(lambda: pub.verify(sig, d, ec.ECDSA(Prehashed(hashes.SHA256())))),
           "local verify of digest signature failed")
    expect(kms_verify(c, kid, d, sig, "ECDSA_SHA_256", "DIGEST"),
           "KMS Verify(DIGEST) false")


@check("F2", "KMS Verify(DIGEST) accepts a RAW-signed message's digest")
def _(c, port):
    kid = make_key(c, "ECC_NIST_P256")
    sig = sign(c, kid, MSG, "ECDSA_SHA_256")
    expect(kms_verify(c, kid, hashlib.sha256(MSG).digest(), sig, "ECDSA_SHA_256",
                      "DIGEST"), "KMS Verify(DIGEST) false")


@check("F2", "DIGEST of wrong length (31 bytes for SHA_256) -> ValidationException")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    expect_error(lambda: sign(c, kid, hashlib.sha256(MSG).digest()[:31],
                              "RSASSA_PKCS1_V1_5_SHA_256", "DIGEST"),
                 "ValidationException")


# F3: PSS salt --------------------------------------------------------------
@check("F3", "RSA_3072 RSASSA_PSS_SHA_256 RAW: salt length 32 verifies locally")
def _(c, port):
    kid = make_key(c, "RSA_3072")
    pub = public_key(c, kid)
    expect(isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 3072, "not RSA-3072")
    sig = sign(c, kid, MSG, "RSASSA_PSS_SHA_256")
    expect(local_ok(lambda: pub.verify(sig, MSG, pss(hashes.SHA256()), hashes.SHA256())),
           "PSS(salt=32) verify failed")
    expect(kms_verify(c, kid, MSG, sig, "RSASSA_PSS_SHA_256"), "KMS Verify false")


@check("F3", "RSA_2048 RSASSA_PSS_SHA_256 DIGEST: salt length 32 verifies locally")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    pub = public_key(c, kid)
    d = hashlib.sha256(MSG).digest()
    sig = sign(c, kid, d, "RSASSA_PSS_SHA_256", "DIGEST")
    expect(local_ok(lambda: pub.verify(sig, d, pss(hashes.SHA256()),
                                       Prehashed(hashes.SHA256()))),
           "PSS(salt=32) verify of digest signature failed")


# F4: key state -------------------------------------------------------------
@check("F4", "Disabled key: Sign and Verify -> DisabledException (400)")
def _(c, port):
    kid = make_key(c, "ECC_NIST_P256")
    sig = sign(c, kid, MSG, "ECDSA_SHA_256")
    c.disable_key(KeyId=kid)
    expect_error(lambda: sign(c, kid, MSG, "ECDSA_SHA_256"), "DisabledException")
    expect_error(lambda: kms_verify(c, kid, MSG, sig, "ECDSA_SHA_256"),
                 "DisabledException")


@check("F4", "PendingDeletion key: Sign -> KMSInvalidStateException (400)")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    c.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    expect_error(lambda: sign(c, kid, MSG, "RSASSA_PKCS1_V1_5_SHA_256"),
                 "KMSInvalidStateException")


@check("F4", "PendingDeletion key: GetPublicKey and Verify -> KMSInvalidStateException")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    sig = sign(c, kid, MSG, "RSASSA_PKCS1_V1_5_SHA_256")
    c.schedule_key_deletion(KeyId=kid, PendingWindowInDays=30)
    expect_error(lambda: c.get_public_key(KeyId=kid), "KMSInvalidStateException")
    expect_error(lambda: kms_verify(c, kid, MSG, sig, "RSASSA_PKCS1_V1_5_SHA_256"),
                 "KMSInvalidStateException")


# F5: key usage -------------------------------------------------------------
@check("F5", "Sign with an ENCRYPT_DECRYPT key -> InvalidKeyUsageException")
def _(c, port):
    kid = make_key(c, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
    expect_error(lambda: sign(c, kid, MSG, "RSASSA_PKCS1_V1_5_SHA_256"),
                 "InvalidKeyUsageException")


@check("F5", "ECDSA_SHA_256 on an RSA key -> InvalidKeyUsageException")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    expect_error(lambda: sign(c, kid, MSG, "ECDSA_SHA_256"), "InvalidKeyUsageException")


@check("F5", "RSASSA_PSS_SHA_256 on an ECC key -> InvalidKeyUsageException")
def _(c, port):
    kid = make_key(c, "ECC_NIST_P256")
    expect_error(lambda: sign(c, kid, MSG, "RSASSA_PSS_SHA_256"),
                 "InvalidKeyUsageException")


@check("F5", "ED25519_SHA_512 on an RSA key -> InvalidKeyUsageException")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    expect_error(lambda: sign(c, kid, MSG, "ED25519_SHA_512"),
                 "InvalidKeyUsageException")


# base: moto behaviour that must be unchanged ---------------------------------
@check("base", "RSA_2048 PKCS1 SHA_256 RAW sign verifies locally")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    pub = public_key(c, kid)
    sig = sign(c, kid, MSG, "RSASSA_PKCS1_V1_5_SHA_256")
    expect(local_ok(lambda: pub.verify(sig, MSG, padding.PKCS1v15(), hashes.SHA256())),
           "local verify failed")
    expect(kms_verify(c, kid, MSG, sig, "RSASSA_PKCS1_V1_5_SHA_256"), "KMS Verify false")


@check("base", "ECC_NIST_P256 ECDSA_SHA_256 RAW: DER signature verifies locally")
def _(c, port):
    kid = make_key(c, "ECC_NIST_P256")
    pub = public_key(c, kid)
    sig = sign(c, kid, MSG, "ECDSA_SHA_256")
    decode_dss_signature(sig)
    expect(local_ok(lambda: pub.verify(sig, MSG, ec.ECDSA(hashes.SHA256()))),
           "local verify failed")


@check("base", "DisableKey/EnableKey round trip: Sign works again, KeyState Enabled")
def _(c, port):
    kid = make_key(c, "ECC_NIST_P256")
    c.disable_key(KeyId=kid)
    expect(c.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Disabled",
           "KeyState not Disabled")
    c.enable_key(KeyId=kid)
    expect(c.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled",
           "KeyState not Enabled")
    sign(c, kid, MSG, "ECDSA_SHA_256")


@check("base", "ScheduleKeyDeletion(7): PendingDeletion + DeletionDate; cancel -> Disabled")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    c.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    meta = c.describe_key(KeyId=kid)["KeyMetadata"]
    expect(meta["KeyState"] == "PendingDeletion" and "DeletionDate" in meta,
           f"state {meta['KeyState']}")
    c.cancel_key_deletion(KeyId=kid)
    expect(c.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Disabled",
           "not Disabled after CancelKeyDeletion")


@check("base", "unknown SigningAlgorithm value -> ValidationException")
def _(c, port):
    kid = make_key(c, "RSA_2048")
    expect_error(lambda: sign(c, kid, MSG, "NOT_AN_ALGORITHM"), "ValidationException")


@check("base", "CreateKey Tags + ListResourceTags")
def _(c, port):
    kid = c.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY",
                       Tags=[{"TagKey": "app", "TagValue": "kmsd"}])["KeyMetadata"]["KeyId"]
    tags = c.list_resource_tags(KeyId=kid)["Tags"]
    expect({"TagKey": "app", "TagValue": "kmsd"} in tags, f"tags {tags}")


@check("base", "CreateAlias / UpdateAlias / ListAliases / DescribeKey by alias")
def _(c, port):
    k1 = make_key(c, "ECC_NIST_P256")
    k2 = make_key(c, "ECC_NIST_P256")
    c.create_alias(AliasName="alias/kmsd-selftest", TargetKeyId=k1)
    expect(c.describe_key(KeyId="alias/kmsd-selftest")["KeyMetadata"]["KeyId"] == k1,
           "alias does not resolve to k1")
    c.update_alias(AliasName="alias/kmsd-selftest", TargetKeyId=k2)
    aliases = c.list_aliases(KeyId=k2)["Aliases"]
    expect(any(a["AliasName"] == "alias/kmsd-selftest" for a in aliases),
           f"alias not listed for k2: {aliases}")
    sign(c, "alias/kmsd-selftest", MSG, "ECDSA_SHA_256")


@check("base", "GenerateDataKey/Decrypt with EncryptionContext")
def _(c, port):
    kid = c.create_key()["KeyMetadata"]["KeyId"]
    ctx = {"purpose": "selftest"}
    dk = c.generate_data_key(KeyId=kid, KeySpec="AES_256", EncryptionContext=ctx)
    expect(len(dk["Plaintext"]) == 32, "data key not 32 bytes")
    pt = c.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"]
    expect(pt == dk["Plaintext"], "decrypted data key differs")
    expect_error(lambda: c.decrypt(CiphertextBlob=dk["CiphertextBlob"],
                                   EncryptionContext={"purpose": "other"}),
                 "InvalidCiphertextException")


@check("base", "other regions: eu-west-2 and an unknown region name both serve KMS")
def _(c, port):
    for region in ("eu-west-2", "kmsd-local-1"):
        rc = kms_client(port, region)
        arn = rc.create_key(KeySpec="ECC_NIST_P256",
                            KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        expect(f":{region}:" in arn, f"ARN {arn} lacks region {region}")


# ----------------------------------------------------------------------------
def run_mode(stock: bool) -> dict[tuple[str, str], bool]:
    label = "stock" if stock else "patched"
    results: dict[tuple[str, str], bool] = {}
    emu = Emulator(stock)
    emu.start()
    try:
        c = kms_client(emu.port)
        for group, name, fn in CHECKS:
            try:
                fn(c, emu.port)
                ok, detail = True, ""
            except CheckFailed as e:
                ok, detail = False, str(e)
            except ClientError as e:
                err = e.response.get("Error", {})
                ok, detail = False, f"{err.get('Code')}: {err.get('Message')}"
            except Exception as e:  # noqa: BLE001
                ok, detail = False, f"{type(e).__name__}: {e}"
                if os.environ.get("SELFTEST_DEBUG"):
                    traceback.print_exc()
            results[(group, name)] = ok
            line = f"{'PASS' if ok else 'FAIL'} [{label}] {group} {name}"
            print(line + (f" -- {detail[:160]}" if detail else ""), flush=True)
    finally:
        rc = emu.stop()
    ok = rc == 0
    results[("base", "SIGTERM -> clean exit 0")] = ok
    print(f"{'PASS' if ok else 'FAIL'} [{label}] base SIGTERM -> clean exit 0"
          + ("" if ok else f" -- rc={rc}"), flush=True)
    return results


def main() -> int:
    stock = run_mode(stock=True)
    patched = run_mode(stock=False)

    print("--- summary ---")
    success = True
    for fault, desc in FAULTS.items():
        stock_fails = [n for (g, n), ok in stock.items() if g == fault and not ok]
        patched_fails = [n for (g, n), ok in patched.items() if g == fault and not ok]
        reproduced = bool(stock_fails)
        fixed = not patched_fails
        success &= reproduced and fixed
        print(f"{fault} {desc}: stock {'reproduced' if reproduced else 'NOT reproduced'}"
              f" ({len(stock_fails)}/{sum(1 for g, _ in stock if g == fault)} checks fail),"
              f" patched {'fixed' if fixed else 'NOT fixed'}")
    stock_base_fail = [n for (g, n), ok in stock.items() if g == "base" and not ok]
    patched_base_fail = [n for (g, n), ok in patched.items() if g == "base" and not ok]
    print(f"base: stock {len(stock_base_fail)} failing, patched {len(patched_base_fail)} failing")
    success &= not stock_base_fail and not patched_base_fail

    n_pass = sum(patched.values())
    n_fail = len(patched) - n_pass
    print(f"selftest: {'OK' if success else 'FAILED'}")
    print(f"{n_pass} passed, {n_fail} failed")
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
