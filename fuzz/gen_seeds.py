#!/usr/bin/env python3
"""Generates fuzz/keys/jwks.json (the fixed public key set the `token` target verifies
against) and the seed tokens in fuzz/seeds/token/ and fuzz/seeds/credential/.

Run once; the output is committed. The private keys of jwks.json are generated here and
thrown away, so nobody (not the seeds, not the fuzzer) can sign a token that verifies: the
`token` target asserts that `jwt::verify` fails for every input. Seed tokens carry the kids
of the fixed set and valid claims, but are signed by other ("forger") keys of the same
types, so they reach the signature check and fail there.

Needs Python 3 with `cryptography`.
"""
import base64
import json
import os
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = os.path.dirname(os.path.abspath(__file__))
ISS = "https://idp.example.com"
AUD = "https://api.example.com"
NOW = 1_800_000_000  # must match NOW in fuzz_targets/token.rs


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def i2b(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return n.to_bytes(size, "big")


def rsa_jwk(pub, kid, alg):
    nums = pub.public_numbers()
    jwk = {"kty": "RSA", "use": "sig", "n": b64(i2b(nums.n)), "e": b64(i2b(nums.e))}
    if kid:
        jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    return jwk


def ec_jwk(pub, kid, crv, size):
    nums = pub.public_numbers()
    jwk = {"kty": "EC", "crv": crv, "x": b64(i2b(nums.x, size)), "y": b64(i2b(nums.y, size))}
    if kid:
        jwk["kid"] = kid
    return jwk


def ed_jwk(pub, kid):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(raw)}


def fixed_set():
    """The published key set; private halves discarded on return."""
    rs1 = rsa.generate_private_key(65537, 2048).public_key()
    rs2 = rsa.generate_private_key(65537, 3072).public_key()
    es1 = ec.generate_private_key(ec.SECP256R1()).public_key()
    es384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    ed1 = ed25519.Ed25519PrivateKey.generate().public_key()
    return {
        "keys": [
            rsa_jwk(rs1, "rs-1", "RS256"),
            rsa_jwk(rs2, "rs-2", None),  # every RS* and PS* algorithm
            ec_jwk(es1, "es-1", "P-256", 32),
            ec_jwk(es384, None, "P-384", 48),  # no kid: selected by alg alone
            ed_jwk(ed1, "ed-1"),
        ]
    }


def sign(alg, key, data):
    if alg.startswith("RS"):
        h = {"RS256": hashes.SHA256(), "RS384": hashes.SHA384(), "RS512": hashes.SHA512()}[alg]
        return key.sign(data, padding.PKCS1v15(), h)
    if alg.startswith("PS"):
        h = {"PS256": hashes.SHA256(), "PS384": hashes.SHA384(), "PS512": hashes.SHA512()}[alg]
        return key.sign(data, padding.PSS(padding.MGF1(h), h.digest_size), h)
    if alg in ("ES256", "ES384"):
        h, size = (hashes.SHA256(), 32) if alg == "ES256" else (hashes.SHA384(), 48)
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h)))
        return i2b(r, size) + i2b(s, size)
    if alg == "EdDSA":
        return key.sign(data)
    raise ValueError(alg)


def main():
    keys_path = os.path.join(HERE, "keys", "jwks.json")
    if os.path.exists(keys_path) and "--new-keys" not in sys.argv:
        print(f"keeping {keys_path} (pass --new-keys to replace it)")
    else:
        with open(keys_path, "w") as f:
            json.dump(fixed_set(), f, indent=1)
            f.write("\n")

    forger = {
        "rsa": rsa.generate_private_key(65537, 2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
    }
    claims = {"iss": ISS, "aud": AUD, "exp": NOW + 600, "iat": NOW - 10, "nbf": NOW - 10,
              "client_id": "client-1", "sub": "client-1", "scope": "orders:read"}
    cases = [
        ("rs256", {"alg": "RS256", "kid": "rs-1", "typ": "JWT"}, "rsa"),
        ("ps384", {"alg": "PS384", "kid": "rs-2", "typ": "at+jwt"}, "rsa"),
        ("es256", {"alg": "ES256", "kid": "es-1"}, "p256"),
        ("es384-nokid", {"alg": "ES384"}, "p384"),
        ("eddsa", {"alg": "EdDSA", "kid": "ed-1", "typ": "application/at+jwt"}, "ed"),
    ]
    tdir = os.path.join(HERE, "seeds", "token")
    cdir = os.path.join(HERE, "seeds", "credential")
    os.makedirs(tdir, exist_ok=True)
    os.makedirs(cdir, exist_ok=True)
    for name, header, kname in cases:
        h = json.dumps(header, separators=(",", ":")).encode()
        p = json.dumps(claims, separators=(",", ":")).encode()
        signing_input = (b64(h) + "." + b64(p)).encode()
        sig = sign(header["alg"], forger[kname], signing_input)
        token = signing_input.decode() + "." + b64(sig)
        # Mode byte (see token.rs): '0' raw token, '1' structured (header \n payload \n sig).
        with open(os.path.join(tdir, f"raw-{name}"), "wb") as f:
            f.write(b"0" + token.encode())
        with open(os.path.join(tdir, f"parts-{name}"), "wb") as f:
            f.write(b"1" + h + b"\n" + p + b"\n" + sig)
        if name == "rs256":
            with open(os.path.join(cdir, "bearer-header"), "wb") as f:
                f.write(b"/orders?x=1\nauthorization:Bearer " + token.encode() + b"\n")
            with open(os.path.join(cdir, "bearer-query"), "wb") as f:
                f.write(b"/orders?x=1&access_token=" + token.encode() + b"&y\n")
    hs = {"alg": "HS256", "kid": "hs-1"}
    h = json.dumps(hs, separators=(",", ":")).encode()
    p = json.dumps(claims, separators=(",", ":")).encode()
    with open(os.path.join(tdir, "parts-hs256-enabled"), "wb") as f:
        f.write(b"3" + h + b"\n" + p + b"\n" + os.urandom(32))


if __name__ == "__main__":
    main()
