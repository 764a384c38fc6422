//! The CA's signing key, from whatever PEM form a CA's key comes in:
//! PKCS#8 (`PRIVATE KEY`, what Sextant writes), PKCS#1 (`RSA PRIVATE KEY`,
//! what `openssl genrsa` and cert-manager write for RSA) or SEC1 (`EC
//! PRIVATE KEY`). rcgen reads PKCS#8 only; a SEC1 key is wrapped in PKCS#8,
//! a PKCS#1 key is signed with ring directly behind rcgen's [`SigningKey`].

use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// A key the CA signs with.
pub enum CaKey {
    /// PKCS#8, through rcgen.
    Pkcs8(Box<rcgen::KeyPair>),
    /// PKCS#1 RSA, through ring (SHA-256 signatures).
    Rsa(Box<RsaKeyPair>),
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CaKey::Pkcs8(_) => "CaKey::Pkcs8",
            CaKey::Rsa(_) => "CaKey::Rsa",
        })
    }
}

impl CaKey {
    /// Reads a private key in PEM; the error says which forms are read.
    pub fn from_pem(pem: &[u8]) -> Result<CaKey, String> {
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM private key: {e}"))?;
        match key {
            PrivateKeyDer::Pkcs8(der) => rcgen::KeyPair::try_from(der.secret_pkcs8_der())
                .map(|k| CaKey::Pkcs8(Box::new(k)))
                .map_err(|e| format!("the PKCS#8 key is not usable: {e}")),
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map(|k| CaKey::Rsa(Box::new(k)))
                .map_err(|e| format!("the RSA key is not usable: {e}")),
            PrivateKeyDer::Sec1(der) => {
                // ring reads EC keys only inside PKCS#8: wrap the SEC1 key
                // in the PKCS#8 envelope of each curve we accept; the
                // wrong curve fails on the key's length.
                for curve in [P256_OID, P384_OID] {
                    let pkcs8 = wrap_sec1(der.secret_sec1_der(), curve);
                    if let Ok(k) = rcgen::KeyPair::try_from(pkcs8.as_slice()) {
                        return Ok(CaKey::Pkcs8(Box::new(k)));
                    }
                }
                Err("the EC key is not on P-256 or P-384 (or lacks its public key)".into())
            }
            _ => Err("an unknown kind of private key".into()),
        }
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::Pkcs8(k) => k.der_bytes(),
            CaKey::Rsa(k) => k.public_key().as_ref(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            CaKey::Pkcs8(k) => k.algorithm(),
            CaKey::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::Pkcs8(k) => k.sign(msg),
            CaKey::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    msg,
                    &mut sig,
                )
                .map_err(|_| rcgen::Error::RingUnspecified)?;
                Ok(sig)
            }
        }
    }
}

/// The DER of `prime256v1` (1.2.840.10045.3.1.7).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// The DER of `secp384r1` (1.3.132.0.34).
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// The DER of `id-ecPublicKey` (1.2.840.10045.2.1).
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// RFC 5208's PrivateKeyInfo around a SEC1 `ECPrivateKey`: version 0, the
/// algorithm (EC public key on `curve`), the SEC1 bytes as an octet string.
fn wrap_sec1(sec1: &[u8], curve: &[u8]) -> Vec<u8> {
    let algorithm = der(0x30, &[EC_PUBLIC_KEY_OID, curve].concat());
    let body = [&[0x02, 0x01, 0x00][..], &algorithm, &der(0x04, sec1)].concat();
    der(0x30, &body)
}

/// One DER element: tag, definite length, contents.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}
