#!/usr/bin/env python3
"""Independent test vectors for src/media/zrtp (RFC 6189), computed with Python's
`cryptography` package (HMAC, SHA-256, AES-CFB, X25519) and plain integer arithmetic
(DH3k, CRC-32C). Nothing here shares code with the Rust implementation.

    python3 src/media/zrtp/vectors.py

prints Rust constants; they are pasted into the `vectors` test modules of kdf.rs and
dh.rs. The tests never run Python.
"""

import warnings

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

warnings.filterwarnings("ignore")  # CFB moved to "decrepit" in cryptography 48
try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB


def sha256(*parts):
    h = hashes.Hash(hashes.SHA256())
    for p in parts:
        h.update(p)
    return h.finalize()


def hmac_sha256(key, *parts):
    h = hmac.HMAC(key, hashes.SHA256())
    for p in parts:
        h.update(p)
    return h.finalize()


def kdf(ki, label, context, bits):
    """RFC 6189 §4.5.1."""
    out = hmac_sha256(ki, (1).to_bytes(4, "big"), label, b"\x00", context,
                      bits.to_bytes(4, "big"))
    return out[: bits // 8]


def s0(dh_result, zid_i, zid_r, total_hash, secrets):
    """RFC 6189 §4.4.1.4."""
    parts = [(1).to_bytes(4, "big"), dh_result, b"ZRTP-HMAC-KDF", zid_i, zid_r, total_hash]
    for s in secrets:
        if s is None:
            parts.append((0).to_bytes(4, "big"))
        else:
            parts += [len(s).to_bytes(4, "big"), s]
    return sha256(*parts)


def cfb(key, iv, data):
    e = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    return e.update(data) + e.finalize()


# RFC 3526 §4: the 3072-bit MODP prime, built from its defining formula
# p = 2^3072 - 2^3008 - 1 + 2^64 * (floor(2^2942 * pi) + 1690314), pi by Machin.
def modp3072():
    def arctan_inv(x, one):
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            total += sign * (term // (2 * n + 1))
            sign, n = -sign, n + 1
        return total

    bits = 3200
    one = 1 << bits
    pi = 4 * (4 * arctan_inv(5, one) - arctan_inv(239, one))
    return 2**3072 - 2**3008 - 1 + 2**64 * ((pi >> (bits - 2942)) + 1690314)


def const(name, value):
    if isinstance(value, bytes):
        value = value.hex()
    print(f'        pub const {name}: &str = "{value}";')


print("    // kdf.rs")
ki = bytes(range(32))
context = b"ZIDi-------ZIDr-------total-hash-total-hash-total-hash-"
const("KDF_128", kdf(ki, b"Initiator SRTP master key", context, 128))
const("KDF_112", kdf(ki, b"Initiator SRTP master salt", context, 112))

zid_i, zid_r = b"initiatorZID", b"responderZID"
dh_result = bytes((i * 7 + 1) & 0xFF for i in range(32))
total = sha256(b"total")
rs1 = bytes([0x11] * 32)
const("S0_NO_SECRETS", s0(dh_result, zid_i, zid_r, total, [None, None, None]))
s0_rs1 = s0(dh_result, zid_i, zid_r, total, [rs1, None, None])
const("S0_WITH_RS1", s0_rs1)
ctx = zid_i + zid_r + total
for name, label, bits in [
    ("SRTP_KEY_I", b"Initiator SRTP master key", 128),
    ("SRTP_SALT_I", b"Initiator SRTP master salt", 112),
    ("SRTP_KEY_R", b"Responder SRTP master key", 128),
    ("SRTP_SALT_R", b"Responder SRTP master salt", 112),
    ("MAC_KEY_I", b"Initiator HMAC key", 256),
    ("MAC_KEY_R", b"Responder HMAC key", 256),
    ("ZRTP_KEY_I", b"Initiator ZRTP key", 128),
    ("ZRTP_KEY_R", b"Responder ZRTP key", 128),
    ("SAS_HASH", b"SAS", 256),
    ("ZRTP_SESS", b"ZRTP Session Key", 256),
    ("EXPORTED_KEY", b"Exported key", 256),
    ("NEW_RS1", b"retained secret", 256),
    ("SRTP_KEY_I_AES3", b"Initiator SRTP master key", 256),
]:
    const(name, kdf(s0_rs1, label, ctx, bits))
const("SAS_VALUE", kdf(s0_rs1, b"SAS", ctx, 256)[:4])
const("RS1_ID_I", hmac_sha256(rs1, b"Initiator")[:8])
const("RS1_ID_R", hmac_sha256(rs1, b"Responder")[:8])

key = bytes(range(0x40, 0x50))
iv = bytes(range(0xA0, 0xB0))
enc = cfb(key, iv, bytes(range(40)))
const("CFB128_40", enc)
const("CFB128_MAC", hmac_sha256(key, enc)[:8])
const("CFB256_40", cfb(bytes(range(0x40, 0x60)), iv, bytes(range(40))))

print("    // dh.rs")
p = modp3072()
const("MODP3072_SHA256", sha256(p.to_bytes(384, "big")))
a = int.from_bytes(bytes(range(1, 65)), "big")
b = int.from_bytes(bytes(range(0x41, 0x81)), "big")
pa, pb = pow(2, a, p), pow(2, b, p)
shared = pow(pb, a, p)
assert shared == pow(pa, b, p)
const("DH3K_PUBLIC_A_SHA256", sha256(pa.to_bytes(384, "big")))
const("DH3K_PUBLIC_B_SHA256", sha256(pb.to_bytes(384, "big")))
const("DH3K_SHARED_SHA256", sha256(shared.to_bytes(384, "big")))

x_a = bytes(range(0x21, 0x41))
x_b = bytes(range(0x61, 0x81))
ka, kb = X25519PrivateKey.from_private_bytes(x_a), X25519PrivateKey.from_private_bytes(x_b)
const("X25519_PUBLIC_A", ka.public_key().public_bytes_raw())
const("X25519_SHARED", ka.exchange(kb.public_key()))

print("    // packet.rs")


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


const("CRC32C_ZRTP_WORD", format(crc32c(b"ZRTP" * 16), "08x"))
