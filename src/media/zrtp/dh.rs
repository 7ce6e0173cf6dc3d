//! The two key agreements (RFC 6189 §5.1.5): X25519 ("X255", RFC 7748) and the
//! mandatory DH3k (finite-field DH over the RFC 3526 3072-bit MODP group, g = 2).
//!
//! A [`KeyPair`] is made from the caller's cryptographic RNG, shows its public value
//! for DHPart1/DHPart2, and is consumed by [`KeyPair::agree`], so a private value is
//! used for at most one agreement. Private values live in zeroizing buffers.
//!
//! DH3k uses `crypto-bigint`'s Montgomery exponentiation, which runs in time
//! independent of the exponent's value (only its fixed bit length shows). The
//! `num-bigint` already in our dependency tree (via libsrtp) is not constant time and
//! would leak the private exponent through timing, so it is not used here.

use std::sync::OnceLock;

use crypto_bigint::modular::{MontyForm, MontyParams};
use crypto_bigint::{Encoding, Odd, U3072, U512};
use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use super::algorithm::KeyAgreement;

/// The RFC 3526 §4 3072-bit MODP prime, "FFFFFFFF FFFFFFFF C90FDAA2 ... FFFFFFFF". The
/// tests rebuild it from its defining formula (vectors.py) and compare hashes.
const MODP_3072_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
);

/// Bits of a DH3k private exponent: 512, twice the 256-bit strength of AES-256, so one
/// exponent size serves AES1 and AES3 (RFC 6189 §5.1.5 asks for at least twice the
/// AES key length).
const DH3K_EXPONENT_BITS: u32 = 512;

/// Length of a DH3k public value and result: 3072 bits.
const DH3K_LEN: usize = 384;

/// Length of an X25519 scalar, public value and result (RFC 7748 §5).
const X25519_LEN: usize = 32;

/// The X25519 base point u = 9 (RFC 7748 §4.1).
const X25519_BASE_POINT: [u8; 32] = {
    let mut u = [0u8; 32];
    u[0] = 9;
    u
};

/// Why a peer's public value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// The public value has the wrong length for the key agreement.
    #[error("DH public value has the wrong length")]
    BadLength,
    /// A DH3k value outside 1 < pv < p − 1 (RFC 6189 §4.4.1.1), or an X25519 value of
    /// small order, which gives the all-zero result (RFC 7748 §6.1).
    #[error("DH public value out of range")]
    OutOfRange,
}

/// The 3072-bit modulus in Montgomery form, computed once.
fn modp_params() -> &'static MontyParams<{ U3072::LIMBS }> {
    static PARAMS: OnceLock<MontyParams<{ U3072::LIMBS }>> = OnceLock::new();
    PARAMS.get_or_init(|| MontyParams::new(Odd::<U3072>::from_be_hex(MODP_3072_HEX)))
}

/// The prime p as an integer.
fn modp_prime() -> U3072 {
    U3072::from_be_hex(MODP_3072_HEX)
}

/// One side's ephemeral key pair.
pub struct KeyPair {
    inner: Inner,
    public: Vec<u8>,
}

enum Inner {
    X255(Zeroizing<[u8; X25519_LEN]>),
    Dh3k(Zeroizing<U512>),
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair from the RNG.
    pub fn generate(algorithm: KeyAgreement, rng: &mut (impl RngCore + CryptoRng)) -> KeyPair {
        match algorithm {
            KeyAgreement::X255 => {
                let mut scalar = Zeroizing::new([0u8; X25519_LEN]);
                rng.fill_bytes(scalar.as_mut());
                KeyPair::x25519_from_scalar(scalar)
            }
            KeyAgreement::Dh3k => {
                let mut bytes = Zeroizing::new([0u8; 64]);
                rng.fill_bytes(bytes.as_mut());
                KeyPair::dh3k_from_exponent(Zeroizing::new(U512::from_be_slice(bytes.as_ref())))
            }
        }
    }

    /// X25519 from a given scalar (clamped by the X25519 function, RFC 7748 §5).
    fn x25519_from_scalar(scalar: Zeroizing<[u8; X25519_LEN]>) -> KeyPair {
        let public = x25519_dalek::x25519(*scalar, X25519_BASE_POINT).to_vec();
        KeyPair {
            inner: Inner::X255(scalar),
            public,
        }
    }

    /// DH3k from a given exponent: pv = 2^x mod p.
    fn dh3k_from_exponent(exponent: Zeroizing<U512>) -> KeyPair {
        let generator = MontyForm::new(&U3072::from_u8(2), *modp_params());
        let public = generator
            .pow_bounded_exp(&*exponent, DH3K_EXPONENT_BITS)
            .retrieve()
            .to_be_bytes()
            .to_vec();
        KeyPair {
            inner: Inner::Dh3k(exponent),
            public,
        }
    }

    /// The key agreement this pair is for.
    pub fn algorithm(&self) -> KeyAgreement {
        match self.inner {
            Inner::X255(_) => KeyAgreement::X255,
            Inner::Dh3k(_) => KeyAgreement::Dh3k,
        }
    }

    /// Our public value, as DHPart1/DHPart2 carry it.
    pub fn public_value(&self) -> &[u8] {
        &self.public
    }

    /// Checks the peer's public value and computes DHResult (RFC 6189 §4.4.1.4): the
    /// 384-byte big-endian g^xy mod p for DH3k, the 32-byte X25519 output for X255.
    /// Consumes the pair: a private value serves one agreement.
    pub fn agree(self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        check_public_value(self.algorithm(), peer_public)?;
        match &self.inner {
            Inner::X255(scalar) => {
                let mut peer = [0u8; X25519_LEN];
                peer.copy_from_slice(peer_public);
                let mut result = Zeroizing::new(x25519_dalek::x25519(**scalar, peer));
                // A small-order point gives all zeros: no contribution from our side.
                if result.iter().all(|&b| b == 0) {
                    result.zeroize();
                    return Err(DhError::OutOfRange);
                }
                Ok(Zeroizing::new(result.to_vec()))
            }
            Inner::Dh3k(exponent) => {
                let mut bytes = [0u8; DH3K_LEN];
                bytes.copy_from_slice(peer_public);
                let peer = U3072::from_be_bytes(bytes);
                let base = MontyForm::new(&peer, *modp_params());
                let mut shared = base
                    .pow_bounded_exp(&**exponent, DH3K_EXPONENT_BITS)
                    .retrieve();
                let out = Zeroizing::new(shared.to_be_bytes().to_vec());
                shared.zeroize();
                Ok(out)
            }
        }
    }
}

/// Checks a peer's public value before any work is done with it: its length, and for
/// DH3k 1 < pv < p − 1 (RFC 6189 §4.4.1.1; 0, 1 and p − 1 would force a known result).
pub fn check_public_value(algorithm: KeyAgreement, public: &[u8]) -> Result<(), DhError> {
    if public.len() != algorithm.public_value_len() {
        return Err(DhError::BadLength);
    }
    if algorithm == KeyAgreement::Dh3k {
        let mut bytes = [0u8; DH3K_LEN];
        bytes.copy_from_slice(public);
        let value = U3072::from_be_bytes(bytes);
        let p_minus_1 = modp_prime().wrapping_sub(&U3072::ONE);
        // Public values: comparing them in variable time leaks nothing secret.
        if value <= U3072::ONE || value >= p_minus_1 {
            return Err(DhError::OutOfRange);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::kdf::sha256;
    use super::super::packet::tests::hex;
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn modulus_is_the_rfc_3526_prime() {
        let p = modp_prime().to_be_bytes();
        assert_eq!(sha256(&[&p]).to_vec(), hex(vectors::MODP3072_SHA256));
    }

    #[test]
    fn x25519_rfc7748_section_6_1() {
        let alice_private = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob_private = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let alice_public = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
        let bob_public = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
        let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
        let alice = KeyPair::x25519_from_scalar(Zeroizing::new(alice_private.try_into().unwrap()));
        let bob = KeyPair::x25519_from_scalar(Zeroizing::new(bob_private.try_into().unwrap()));
        assert_eq!(alice.public_value(), hex(alice_public).as_slice());
        assert_eq!(bob.public_value(), hex(bob_public).as_slice());
        assert_eq!(
            alice.agree(&hex(bob_public)).unwrap().as_slice(),
            hex(shared).as_slice()
        );
        assert_eq!(
            bob.agree(&hex(alice_public)).unwrap().as_slice(),
            hex(shared).as_slice()
        );
    }

    #[test]
    fn x25519_matches_python_and_refuses_small_order_points() {
        let a =
            KeyPair::x25519_from_scalar(Zeroizing::new(core::array::from_fn(|i| 0x21 + i as u8)));
        let b =
            KeyPair::x25519_from_scalar(Zeroizing::new(core::array::from_fn(|i| 0x61 + i as u8)));
        assert_eq!(a.public_value(), hex(vectors::X25519_PUBLIC_A).as_slice());
        let b_public = b.public_value().to_vec();
        assert_eq!(
            a.agree(&b_public).unwrap().as_slice(),
            hex(vectors::X25519_SHARED).as_slice()
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // u = 0 and u = 1 are of small order (RFC 7748 §7).
        for u in [[0u8; 32], core::array::from_fn(|i| u8::from(i == 0))] {
            let pair = KeyPair::generate(KeyAgreement::X255, &mut rng);
            assert_eq!(pair.agree(&u), Err(DhError::OutOfRange));
        }
        let pair = KeyPair::generate(KeyAgreement::X255, &mut rng);
        assert_eq!(pair.agree(&[9; 31]), Err(DhError::BadLength));
    }

    #[test]
    fn dh3k_matches_python_and_both_sides_agree() {
        let exp = |start: u8| {
            let bytes: Vec<u8> = (start..start + 64).collect();
            Zeroizing::new(U512::from_be_slice(&bytes))
        };
        let a = KeyPair::dh3k_from_exponent(exp(1));
        let b = KeyPair::dh3k_from_exponent(exp(0x41));
        assert_eq!(
            sha256(&[a.public_value()]).to_vec(),
            hex(vectors::DH3K_PUBLIC_A_SHA256)
        );
        assert_eq!(
            sha256(&[b.public_value()]).to_vec(),
            hex(vectors::DH3K_PUBLIC_B_SHA256)
        );
        let (pa, pb) = (a.public_value().to_vec(), b.public_value().to_vec());
        let shared_a = a.agree(&pb).unwrap();
        let shared_b = b.agree(&pa).unwrap();
        assert_eq!(shared_a.len(), 384);
        assert_eq!(shared_a, shared_b);
        assert_eq!(
            sha256(&[&shared_a]).to_vec(),
            hex(vectors::DH3K_SHARED_SHA256)
        );

        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let x = KeyPair::generate(KeyAgreement::Dh3k, &mut rng);
        let y = KeyPair::generate(KeyAgreement::Dh3k, &mut rng);
        let px = x.public_value().to_vec();
        let py = y.public_value().to_vec();
        assert_eq!(x.agree(&py).unwrap(), y.agree(&px).unwrap());
    }

    #[test]
    fn dh3k_out_of_range_public_values_are_refused() {
        let p = modp_prime();
        let value = |v: U3072| v.to_be_bytes().to_vec();
        for bad in [
            U3072::ZERO,
            U3072::ONE,
            p.wrapping_sub(&U3072::ONE),
            p,
            U3072::MAX,
        ] {
            assert_eq!(
                check_public_value(KeyAgreement::Dh3k, &value(bad)),
                Err(DhError::OutOfRange)
            );
        }
        assert_eq!(
            check_public_value(KeyAgreement::Dh3k, &value(U3072::from_u8(2))),
            Ok(())
        );
        assert_eq!(
            check_public_value(
                KeyAgreement::Dh3k,
                &value(p.wrapping_sub(&U3072::from_u8(2)))
            ),
            Ok(())
        );
        assert_eq!(
            check_public_value(KeyAgreement::Dh3k, &[1; 32]),
            Err(DhError::BadLength)
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let pair = KeyPair::generate(KeyAgreement::Dh3k, &mut rng);
        assert_eq!(pair.agree(&value(U3072::ONE)), Err(DhError::OutOfRange));
    }

    /// Output of `python3 src/media/zrtp/vectors.py`.
    mod vectors {
        pub const MODP3072_SHA256: &str =
            "48cf8b092fbce4359d9871abf74f98e25b6163379eaa15cd9087e800c6d1c55c";
        pub const DH3K_PUBLIC_A_SHA256: &str =
            "077dffd743a6dda7e2400cb20075f1619d72d9eb8c6fb5d0c2af92940f79bddc";
        pub const DH3K_PUBLIC_B_SHA256: &str =
            "5626d6c537c438a47ee74c08f0b24eea742e92c70ebc6fe4d456b1c8abf89117";
        pub const DH3K_SHARED_SHA256: &str =
            "52ab179f5c6078c769b239bf21afa47323817bc2340f04a0bd610943fe08c526";
        pub const X25519_PUBLIC_A: &str =
            "5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b";
        pub const X25519_SHARED: &str =
            "c84ff380f2f65070b8b9abbc433814d11a6f6614a045d86785a9dbb608fc9848";
    }
}
