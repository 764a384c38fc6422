//! A certificate signing request as the CA takes it: PEM, bounded in size,
//! its signature verified (the caller holds the key), and its key strong
//! enough (ECDSA on P-256 or P-384, Ed25519, or RSA of 2048 bits or more).
//! Nothing else in it is used: the certificate's names and lifetime are
//! the CA's to decide ([`crate::authority`]).

use rcgen::CertificateSigningRequestParams;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;

/// The largest CSR read (a 4096-bit RSA CSR is under 2 KB of PEM).
pub const MAX_CSR_BYTES: usize = 16 << 10;

/// Why a CSR is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrError {
    /// Larger than [`MAX_CSR_BYTES`].
    TooLarge(usize),
    /// Not a PEM certificate request, or its signature does not verify.
    Malformed(String),
    /// Its key is weaker than the CA accepts.
    WeakKey(String),
}

impl std::fmt::Display for CsrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CsrError::TooLarge(n) => write!(f, "the CSR is {n} bytes, over {MAX_CSR_BYTES}"),
            CsrError::Malformed(e) => write!(f, "the CSR is not usable: {e}"),
            CsrError::WeakKey(e) => write!(
                f,
                "the CSR's key is refused ({e}): ECDSA P-256 or P-384, Ed25519, or RSA of 2048 bits or more"
            ),
        }
    }
}

/// The request, checked: its public key for the certificate.
pub fn parse(pem: &str) -> Result<CertificateSigningRequestParams, CsrError> {
    if pem.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge(pem.len()));
    }
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CsrError::Malformed(format!("no PEM CERTIFICATE REQUEST block ({e})")))?;
    strength(der.as_ref())?;
    // Parses again and verifies the signature: the caller proves it holds
    // the key the certificate will name.
    CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => {
            CsrError::Malformed("its signature does not verify".into())
        }
        other => CsrError::Malformed(other.to_string()),
    })
}

fn strength(der: &[u8]) -> Result<(), CsrError> {
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        // id-ecPublicKey, with its curve as the parameter.
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" | "1.3.132.0.34" => Ok(()),
                other => Err(CsrError::WeakKey(format!("elliptic curve {other:?}"))),
            }
        }
        // Ed25519.
        "1.3.101.112" => Ok(()),
        // rsaEncryption.
        "1.2.840.113549.1.1.1" => {
            let bits = spki
                .parsed()
                .map(|k| k.key_size())
                .map_err(|e| CsrError::Malformed(e.to_string()))?;
            if bits >= 2048 {
                Ok(())
            } else {
                Err(CsrError::WeakKey(format!("RSA of {bits} bits")))
            }
        }
        other => Err(CsrError::WeakKey(format!("key algorithm {other}"))),
    }
}
