#!/usr/bin/env python3
"""Local AWS KMS emulator for kmsd's integration tests.

Starts moto's KMS server (moto==5.2.5, see requirements.txt) on 127.0.0.1 and,
unless --stock is given, monkeypatches five places where stock moto departs
from AWS KMS's documented behaviour:

  1. KeySpec ECC_NIST_EDWARDS25519 (Ed25519, SIGN_VERIFY) with ED25519_SHA_512
     signing over the RAW message (<= 4096 bytes).
  2. MessageType=DIGEST: the message is a pre-computed digest and is signed /
     verified as such (its length must match the algorithm's hash).
  3. RSASSA_PSS_*: salt length == digest length (moto uses the maximum).
  4. Key state: Sign / Verify / GetPublicKey on a Disabled key ->
     DisabledException, on a PendingDeletion key -> KMSInvalidStateException.
  5. Wrong key usage, or a signing algorithm the key spec does not support ->
     InvalidKeyUsageException (moto says ValidationException).

Everything else is moto's own behaviour. ECDSA signatures stay DER-encoded,
as AWS returns them.

Usage:  python emulator.py [--host 127.0.0.1] [--port 0] [--stock] [--verbose]

When the server accepts connections it prints exactly one line on stdout,
``KMS_EMULATOR_READY port=<port>``, and flushes. It runs until SIGTERM or
SIGINT, then shuts down and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

ED25519_KEY_SPEC = "ECC_NIST_EDWARDS25519"
ED25519_SHA_512 = "ED25519_SHA_512"
ED25519_PH_SHA_512 = "ED25519_PH_SHA_512"

# AWS KMS SigningAlgorithmSpec enum. A value outside it is a ValidationException
# (malformed request); a value inside it that the key cannot use is an
# InvalidKeyUsageException.
AWS_SIGNING_ALGORITHMS = frozenset(
    {
        "RSASSA_PSS_SHA_256",
        "RSASSA_PSS_SHA_384",
        "RSASSA_PSS_SHA_512",
        "RSASSA_PKCS1_V1_5_SHA_256",
        "RSASSA_PKCS1_V1_5_SHA_384",
        "RSASSA_PKCS1_V1_5_SHA_512",
        "ECDSA_SHA_256",
        "ECDSA_SHA_384",
        "ECDSA_SHA_512",
        "SM2DSA",
        "ML_DSA_SHAKE_256",
        ED25519_SHA_512,
        ED25519_PH_SHA_512,
    }
)
# AWS KMS MessageType enum.
AWS_MESSAGE_TYPES = frozenset({"RAW", "DIGEST", "EXTERNAL_MU"})
# AWS KMS Sign/Verify: Message length 1..4096 bytes.
MAX_MESSAGE_LEN = 4096


def apply_aws_patches() -> None:
    """Monkeypatch moto's KMS model and responses (import-time, no fork)."""
    import base64
    import json

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    from moto.core.exceptions import JsonRESTError
    from moto.kms import models as kms_models
    from moto.kms import responses as kms_responses
    from moto.kms import utils as kms_utils
    from moto.kms.exceptions import ValidationException

    KmsBackend = kms_models.KmsBackend
    Key = kms_models.Key
    KmsResponse = kms_responses.KmsResponse

    # ------------------------------------------------------------------
    # Exceptions with AWS's names (moto's InvalidKeyUsageException has an
    # empty message; these carry one). All are HTTP 400 JSON errors shaped
    # {"__type": "<Name>", "message": "..."} like AWS's awsJson1_1 errors.
    # ------------------------------------------------------------------
    class DisabledException(JsonRESTError):
        code = 400

        def __init__(self, message: str):
            super().__init__("DisabledException", message)

    class KMSInvalidStateException(JsonRESTError):
        code = 400

        def __init__(self, message: str):
            super().__init__("KMSInvalidStateException", message)

    class InvalidKeyUsageException(JsonRESTError):
        code = 400

        def __init__(self, message: str):
            super().__init__("InvalidKeyUsageException", message)

    # ------------------------------------------------------------------
    # Fault 1: Ed25519 keys (KeySpec ECC_NIST_EDWARDS25519).
    # ------------------------------------------------------------------
    class Ed25519PrivateKey(kms_utils.AbstractPrivateKey):
        """Ed25519 key material; sign/verify are pure Ed25519 (ED25519_SHA_512)."""

        def __init__(self) -> None:
            self.private_key = ed25519.Ed25519PrivateKey.generate()

        def sign(self, message: bytes, signing_algorithm: str) -> bytes:
            return self.private_key.sign(message)

        def verify(self, message: bytes, signature: bytes, signing_algorithm: str) -> bool:
            try:
                self.private_key.public_key().verify(signature, message)
                return True
            except InvalidSignature:
                return False

        def public_key(self) -> bytes:
            # AWS GetPublicKey: DER-encoded X.509 SubjectPublicKeyInfo.
            return self.private_key.public_key().public_bytes(
                encoding=serialization.Encoding.DER,
                format=serialization.PublicFormat.SubjectPublicKeyInfo,
            )

    # Key.__init__ calls the name `generate_private_key` from models' globals.
    _orig_generate_private_key = kms_models.generate_private_key

    def generate_private_key(key_spec: str) -> kms_utils.AbstractPrivateKey:
        if key_spec == ED25519_KEY_SPEC:
            return Ed25519PrivateKey()
        return _orig_generate_private_key(key_spec)

    kms_models.generate_private_key = generate_private_key

    # moto validates KeySpec against its own (closed) enum; accept Ed25519 too.
    _orig_ensure_valid_key_spec = KmsBackend._KmsBackend__ensure_valid_key_spec

    def _ensure_valid_key_spec(self, key_spec: str) -> None:
        if key_spec == ED25519_KEY_SPEC:
            return
        _orig_ensure_valid_key_spec(self, key_spec)

    KmsBackend._KmsBackend__ensure_valid_key_spec = _ensure_valid_key_spec

    # AWS: ECC_NIST_EDWARDS25519 keys are SIGN_VERIFY (or KEY_AGREEMENT, not
    # emulated); the default KeyUsage ENCRYPT_DECRYPT is rejected.
    _orig_create_key = KmsBackend.create_key

    def create_key(self, policy, key_usage, key_spec, description, tags, *args, **kwargs):
        if key_spec == ED25519_KEY_SPEC and key_usage != "SIGN_VERIFY":
            raise ValidationException(
                f"KeyUsage {key_usage or 'ENCRYPT_DECRYPT'} is not compatible with "
                f"KeySpec {ED25519_KEY_SPEC}"
            )
        return _orig_create_key(
            self, policy, key_usage, key_spec, description, tags, *args, **kwargs
        )

    create_key.__doc__ = _orig_create_key.__doc__
    KmsBackend.create_key = create_key

    # DescribeKey / CreateKey / GetPublicKey report the key's SigningAlgorithms.
    _orig_signing_algorithms = Key.signing_algorithms

    def signing_algorithms(self):
        if self.key_spec == ED25519_KEY_SPEC and self.key_usage == "SIGN_VERIFY":
            # ED25519_PH_SHA_512 (Ed25519ph) is not emulated, so not advertised.
            return [ED25519_SHA_512]
        return _orig_signing_algorithms.fget(self)

    Key.signing_algorithms = property(signing_algorithms)

    # ------------------------------------------------------------------
    # Fault 4: key state gates cryptographic operations.
    # ------------------------------------------------------------------
    def require_usable_state(key) -> None:
        if key.key_state == "Disabled":
            raise DisabledException(f"{key.arn} is disabled.")
        if key.key_state == "PendingDeletion":
            raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
        if key.key_state != "Enabled":
            raise KMSInvalidStateException(
                f"{key.arn} is not in a valid state for this operation ({key.key_state})."
            )

    # ------------------------------------------------------------------
    # Fault 5: usage / algorithm mismatches are InvalidKeyUsageException.
    # ------------------------------------------------------------------
    def require_signing_key(key, signing_algorithm: str) -> None:
        if signing_algorithm not in AWS_SIGNING_ALGORITHMS:
            raise ValidationException(
                f"1 validation error detected: Value '{signing_algorithm}' at "
                "'signingAlgorithm' failed to satisfy constraint: Member must "
                f"satisfy enum value set: {sorted(AWS_SIGNING_ALGORITHMS)}"
            )
        if key.key_usage != "SIGN_VERIFY":
            raise InvalidKeyUsageException(
                f"{key.arn} key usage is {key.key_usage or 'ENCRYPT_DECRYPT'} "
                "which is not valid for signing."
            )
        if signing_algorithm not in (key.signing_algorithms or []):
            raise InvalidKeyUsageException(
                f"Algorithm {signing_algorithm} is incompatible with key spec "
                f"{key.key_spec}."
            )

    # ------------------------------------------------------------------
    # Faults 1-3: the signing primitives.
    # ------------------------------------------------------------------
    def hash_for(signing_algorithm: str) -> hashes.HashAlgorithm:
        if signing_algorithm.endswith("_SHA_256"):
            return hashes.SHA256()
        if signing_algorithm.endswith("_SHA_384"):
            return hashes.SHA384()
        return hashes.SHA512()

    def message_and_hash(message: bytes, message_type: str, signing_algorithm: str):
        """Fault 2: DIGEST means 'already hashed' -> cryptography's Prehashed."""
        h = hash_for(signing_algorithm)
        if message_type == "RAW":
            return message, h
        if message_type == "DIGEST":
            if len(message) != h.digest_size:
                raise ValidationException(
                    f"Digest is invalid length for algorithm {signing_algorithm}."
                )
            return message, Prehashed(h)
        raise ValidationException(
            f"MessageType {message_type} is not valid for algorithm {signing_algorithm}."
        )

    def rsa_padding(signing_algorithm: str):
        h = hash_for(signing_algorithm)
        if signing_algorithm.startswith("RSASSA_PSS_"):
            # Fault 3: AWS uses salt length == digest length (moto: MAX_LENGTH).
            return padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
        return padding.PKCS1v15()

    def do_sign(key, message: bytes, signing_algorithm: str, message_type: str) -> bytes:
        inner = getattr(key.private_key, "private_key", None)
        if signing_algorithm == ED25519_SHA_512:
            # AWS: ED25519_SHA_512 signs the raw message; DIGEST is invalid.
            if message_type != "RAW":
                raise ValidationException(
                    f"{ED25519_SHA_512} requires MessageType RAW."
                )
            return inner.sign(message)
        if isinstance(inner, rsa.RSAPrivateKey) and signing_algorithm.startswith("RSASSA_"):
            data, h = message_and_hash(message, message_type, signing_algorithm)
            return inner.sign(data, rsa_padding(signing_algorithm), h)
        if isinstance(inner, ec.EllipticCurvePrivateKey) and signing_algorithm.startswith("ECDSA_"):
            data, h = message_and_hash(message, message_type, signing_algorithm)
            return inner.sign(data, ec.ECDSA(h))  # DER-encoded, as AWS returns
        # Anything else (e.g. SM2DSA): moto's own code, RAW only.
        if message_type != "RAW":
            raise ValidationException(
                f"MessageType {message_type} is not supported for {signing_algorithm}."
            )
        return key.private_key.sign(message, signing_algorithm)

    def do_verify(key, message: bytes, signature: bytes, signing_algorithm: str,
                  message_type: str) -> bool:
        inner = getattr(key.private_key, "private_key", None)
        try:
            if signing_algorithm == ED25519_SHA_512:
                if message_type != "RAW":
                    raise ValidationException(
                        f"{ED25519_SHA_512} requires MessageType RAW."
                    )
                inner.public_key().verify(signature, message)
                return True
            if isinstance(inner, rsa.RSAPrivateKey) and signing_algorithm.startswith("RSASSA_"):
                data, h = message_and_hash(message, message_type, signing_algorithm)
                inner.public_key().verify(signature, data, rsa_padding(signing_algorithm), h)
                return True
            if isinstance(inner, ec.EllipticCurvePrivateKey) and signing_algorithm.startswith("ECDSA_"):
                data, h = message_and_hash(message, message_type, signing_algorithm)
                inner.public_key().verify(signature, data, ec.ECDSA(h))
                return True
        except InvalidSignature:
            return False
        except ValueError:  # e.g. malformed DER in an ECDSA signature
            return False
        if message_type != "RAW":
            raise ValidationException(
                f"MessageType {message_type} is not supported for {signing_algorithm}."
            )
        return key.private_key.verify(message, signature, signing_algorithm)

    # ------------------------------------------------------------------
    # Backend: Sign / Verify / GetPublicKey with the checks above.
    # (message_type defaults to RAW so any other caller keeps working.)
    # ------------------------------------------------------------------
    def backend_sign(self, key_id, message, signing_algorithm, message_type="RAW"):
        key = self.describe_key(key_id)
        require_usable_state(key)
        require_signing_key(key, signing_algorithm)
        signature = do_sign(key, message, signing_algorithm, message_type)
        return key.arn, signature, signing_algorithm

    def backend_verify(self, key_id, message, signature, signing_algorithm,
                       message_type="RAW"):
        key = self.describe_key(key_id)
        require_usable_state(key)
        require_signing_key(key, signing_algorithm)
        valid = do_verify(key, message, signature, signing_algorithm, message_type)
        return key.arn, valid, signing_algorithm

    def backend_get_public_key(self, key_id):
        key = self.describe_key(key_id)
        require_usable_state(key)
        return key, key.private_key.public_key()

    KmsBackend.sign = backend_sign
    KmsBackend.verify = backend_verify
    KmsBackend.get_public_key = backend_get_public_key

    # ------------------------------------------------------------------
    # Responses: moto's Sign/Verify handlers read MessageType but never pass
    # it on; these replacements do (and validate it and the message length).
    # Output shape is moto's unchanged.
    # ------------------------------------------------------------------
    def read_message(resp) -> tuple[bytes, str]:
        message = resp._get_param("Message")
        message_type = resp._get_param("MessageType") or "RAW"
        if isinstance(message, str):
            message = message.encode("utf-8")
        if not message:
            raise ValidationException(
                "1 validation error detected: Value at 'Message' failed to satisfy "
                "constraint: Member must have length greater than or equal to 1"
            )
        if len(message) > MAX_MESSAGE_LEN:
            raise ValidationException(
                "1 validation error detected: Value at 'Message' failed to satisfy "
                f"constraint: Member must have length less than or equal to {MAX_MESSAGE_LEN}"
            )
        if message_type not in AWS_MESSAGE_TYPES:
            raise ValidationException(
                f"1 validation error detected: Value '{message_type}' at 'MessageType' "
                "failed to satisfy constraint: Member must satisfy enum value set: "
                f"{sorted(AWS_MESSAGE_TYPES)}"
            )
        return message, message_type

    def response_sign(self) -> str:
        """https://docs.aws.amazon.com/kms/latest/APIReference/API_Sign.html"""
        key_id = self._get_param("KeyId")
        signing_algorithm = self._get_param("SigningAlgorithm")
        self._validate_key_id(key_id)
        message, message_type = read_message(self)
        key_arn, signature, signing_algorithm = self.kms_backend.sign(
            key_id=key_id,
            message=message,
            signing_algorithm=signing_algorithm,
            message_type=message_type,
        )
        return json.dumps(
            {
                "KeyId": key_arn,
                "Signature": base64.b64encode(signature).decode("utf-8"),
                "SigningAlgorithm": signing_algorithm,
            }
        )

    def response_verify(self) -> str:
        """https://docs.aws.amazon.com/kms/latest/APIReference/API_Verify.html"""
        key_id = self._get_param("KeyId")
        signing_algorithm = self._get_param("SigningAlgorithm")
        signature = self._get_param("Signature")
        self._validate_key_id(key_id)
        message, message_type = read_message(self)
        if isinstance(signature, str):
            signature = base64.b64decode(signature.encode("utf-8"))
        if not signature:
            raise ValidationException(
                "1 validation error detected: Value at 'Signature' failed to satisfy "
                "constraint: Member must have length greater than or equal to 1"
            )
        key_arn, valid, signing_algorithm = self.kms_backend.verify(
            key_id=key_id,
            message=message,
            signature=signature,
            signing_algorithm=signing_algorithm,
            message_type=message_type,
        )
        return json.dumps(
            {
                "KeyId": key_arn,
                "SignatureValid": valid,
                "SigningAlgorithm": signing_algorithm,
            }
        )

    KmsResponse.sign = response_sign
    KmsResponse.verify = response_verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address; only 127.0.0.1 (or localhost) is accepted")
    parser.add_argument("--port", type=int, default=0,
                        help="TCP port; 0 (default) picks a free one")
    parser.add_argument("--stock", action="store_true",
                        help="run moto unpatched (to demonstrate its faults)")
    parser.add_argument("--verbose", action="store_true",
                        help="log each request to stderr (off by default so an "
                             "unread stderr pipe can never fill up and block)")
    args = parser.parse_args(argv)

    if args.host not in ("127.0.0.1", "localhost"):
        print(f"emulator.py: refusing to bind to {args.host!r}: only 127.0.0.1 is allowed",
              file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"emulator.py: invalid port {args.port}", file=sys.stderr)
        return 2

    # Dummy credentials for anything in-process that might look for them; the
    # server itself does not check SigV4 signatures.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    # moto setting (not a patch): serve any region name the client signs for,
    # not only the regions botocore knows (otherwise: HTTP 500 KeyError).
    os.environ["MOTO_ALLOW_NONEXISTENT_REGION"] = "true"

    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    # Import moto's KMS first so the patches land before the server's first
    # request builds the KMS app from these same (patched) module objects.
    import moto.kms.models  # noqa: F401
    import moto.kms.responses  # noqa: F401

    if not args.stock:
        apply_aws_patches()

    from moto.server import ThreadedMotoServer

    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()  # returns once the socket is bound and listening
    _, port = server.get_host_and_port()
    os.environ["MOTO_PORT"] = str(port)

    sys.stdout.write(f"KMS_EMULATOR_READY port={port}\n")
    sys.stdout.flush()

    while not stop.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
