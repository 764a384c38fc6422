//! Who a proxy is, and whether it may be served: from its client
//! certificate (see [`super::tls`]) or from a bearer token in the stream's
//! `authorization` metadata, validated by a [`TokenValidator`] (a static
//! token file here; Kubernetes TokenReview in the `sextant` crate).
//!
//! Identities are SPIFFE-form (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`)
//! whichever way they were proved, so one check compares a node's claimed
//! namespace with what it proved.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What proxies must prove to be served (`--xds-auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdsAuth {
    /// Nothing: anyone who reaches the port is served (laptops). A client
    /// certificate's identity, when there is one, is still checked against
    /// the node's claim.
    #[default]
    None,
    /// A client certificate with a SPIFFE id.
    Mtls,
    /// A bearer token the validator accepts.
    Token,
    /// Either.
    Any,
}

impl std::str::FromStr for XdsAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<XdsAuth, String> {
        match s {
            "none" => Ok(XdsAuth::None),
            "mtls" => Ok(XdsAuth::Mtls),
            "token" => Ok(XdsAuth::Token),
            "any" => Ok(XdsAuth::Any),
            other => Err(format!("{other:?}: expected none, mtls, token or any")),
        }
    }
}

/// The future a validation returns.
pub type Validation<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Turns a bearer token into the identity it proves.
pub trait TokenValidator: Send + Sync + 'static {
    /// The SPIFFE-form identity `token` proves, or why it proves none.
    fn validate<'a>(&'a self, token: &'a str) -> Validation<'a>;
}

/// A validator, shareable and printable.
#[derive(Clone)]
pub struct Tokens(pub Arc<dyn TokenValidator>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

/// The identity of service account `sa` in `namespace`.
pub fn identity(trust_domain: &str, namespace: &str, sa: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Tokens from a file, for proxies off Kubernetes: one entry per line,
/// `TOKEN NAMESPACE [SERVICE_ACCOUNT]` (`#` starts a comment). The account
/// defaults to `default`; the trust domain is `token`.
#[derive(Default)]
pub struct TokenFile {
    tokens: HashMap<String, String>,
}

/// The most entries a token file may hold.
pub const MAX_TOKENS: usize = 100_000;

impl TokenFile {
    /// Reads `path`; the error names the file and line.
    pub fn load(path: &Path) -> Result<TokenFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        TokenFile::parse(&text).map_err(|e| format!("{}:{e}", path.display()))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<TokenFile, String> {
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (token, ns, sa) = match fields.as_slice() {
                [t, ns] => (*t, *ns, "default"),
                [t, ns, sa] => (*t, *ns, *sa),
                _ => {
                    return Err(format!(
                        "{}: expected TOKEN NAMESPACE [SERVICE_ACCOUNT]",
                        n + 1
                    ));
                }
            };
            if !is_label(ns) {
                return Err(format!(
                    "{}: namespace {ns:?} is not a DNS label (a-z, 0-9, -)",
                    n + 1
                ));
            }
            if tokens.len() >= MAX_TOKENS {
                return Err(format!("{}: more than {MAX_TOKENS} tokens", n + 1));
            }
            if tokens
                .insert(token.to_owned(), identity("token", ns, sa))
                .is_some()
            {
                return Err(format!("{}: a token listed twice", n + 1));
            }
        }
        Ok(TokenFile { tokens })
    }

    /// How many tokens it holds.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl TokenValidator for TokenFile {
    fn validate<'a>(&'a self, token: &'a str) -> Validation<'a> {
        // Compared by hash lookup: the map holds the tokens, and a miss
        // says nothing about which part was wrong.
        let found = self.tokens.get(token).cloned();
        Box::pin(async move { found.ok_or_else(|| "unknown token".to_owned()) })
    }
}

/// Remembers validations for a while, so a reconnecting fleet does not
/// ask the validator (an API server) once per stream. Bounded: when full,
/// it starts over.
pub struct Cached<V> {
    inner: V,
    ttl: Duration,
    /// Keyed by the token itself: a 64-bit hash could be made to collide
    /// with another proxy's token and borrow its identity.
    entries: Mutex<HashMap<sextant_core::Secret, CachedAnswer>>,
}

/// A validation's answer and until when it holds.
type CachedAnswer = (Result<String, String>, Instant);

/// Entries a [`Cached`] validator keeps (tokens are at most
/// [`super::MAX_TOKEN_BYTES`], so the cache is bounded in bytes too).
pub const MAX_CACHED: usize = 10_000;

impl<V: TokenValidator> Cached<V> {
    /// Caches `inner`'s answers for `ttl` (failures for a tenth of it).
    pub fn new(inner: V, ttl: Duration) -> Cached<V> {
        Cached {
            inner,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: TokenValidator> TokenValidator for Cached<V> {
    fn validate<'a>(&'a self, token: &'a str) -> Validation<'a> {
        let key = sextant_core::Secret::new(token);
        Box::pin(async move {
            let now = Instant::now();
            if let Some((answer, until)) = self
                .entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                && *until > now
            {
                return answer.clone();
            }
            let answer = self.inner.validate(token).await;
            let mut ttl = if answer.is_ok() {
                self.ttl
            } else {
                self.ttl / 10
            };
            // Never past the token's own lifetime (a JWT's `exp`): an
            // expired token is validated again, and refused.
            if let Some(left) = jwt_expiry(token).map(|exp| {
                exp.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
            }) {
                ttl = ttl.min(left);
            }
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
            entries.insert(key, (answer.clone(), now + ttl));
            answer
        })
    }
}

/// When a JWT expires, from its unverified `exp` claim (the token was
/// validated by its issuer; this only bounds how long the answer is
/// kept). `None` for tokens that are not JWTs or carry no `exp`.
pub fn jwt_expiry(token: &str) -> Option<std::time::SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    std::time::UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// Unpadded base64url, as JWTs write their parts; `None` if malformed.
fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        fn enc(b: &[u8]) -> String {
            const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in b.chunks(3) {
                let n = chunk.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x))
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
                }
            }
            out
        }
        format!(
            "{}.{}.sig",
            enc(b"{\"alg\":\"RS256\"}"),
            enc(claims.as_bytes())
        )
    }

    #[test]
    fn a_jwts_expiry_is_read() {
        let t = jwt("{\"sub\":\"system:serviceaccount:shop:web\",\"exp\":4102444800}");
        assert_eq!(
            jwt_expiry(&t),
            std::time::UNIX_EPOCH.checked_add(Duration::from_secs(4_102_444_800))
        );
        assert_eq!(jwt_expiry("not-a-jwt"), None);
        assert_eq!(jwt_expiry(&jwt("{\"sub\":\"x\"}")), None);
        assert_eq!(jwt_expiry("a.%%%.c"), None);
    }

    #[tokio::test]
    async fn an_expired_token_is_not_served_from_the_cache() {
        struct Any;
        impl TokenValidator for Any {
            fn validate<'a>(&'a self, token: &'a str) -> Validation<'a> {
                // An issuer that refuses what has expired.
                let expired = jwt_expiry(token).is_some_and(|e| e <= std::time::SystemTime::now());
                Box::pin(async move {
                    if expired {
                        Err("expired".into())
                    } else {
                        Ok("spiffe://t/ns/a/sa/b".into())
                    }
                })
            }
        }
        let c = Cached::new(Any, Duration::from_secs(60));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let t = jwt(&format!("{{\"exp\":{}}}", now + 1));
        assert!(c.validate(&t).await.is_ok());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(
            c.validate(&t).await.is_err(),
            "the cached answer outlived the token"
        );
    }

    #[tokio::test]
    async fn a_token_file_maps_tokens_to_identities() {
        let f = TokenFile::parse("# comment\nabc shop web\ndef payments   # trailing\n\n")
            .expect("parses");
        assert_eq!(f.len(), 2);
        assert_eq!(
            f.validate("abc").await.as_deref(),
            Ok("spiffe://token/ns/shop/sa/web")
        );
        assert_eq!(
            f.validate("def").await.as_deref(),
            Ok("spiffe://token/ns/payments/sa/default")
        );
        assert!(f.validate("nope").await.is_err());
        for (bad, says) in [
            ("abc", "1: expected"),
            ("a b c d", "1: expected"),
            ("a Bad_NS", "namespace"),
            ("a x\na y", "2: a token listed twice"),
        ] {
            let e = TokenFile::parse(bad).err().unwrap_or_default();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    struct Counting(std::sync::atomic::AtomicUsize);

    impl TokenValidator for Counting {
        fn validate<'a>(&'a self, token: &'a str) -> Validation<'a> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ok = token == "good";
            Box::pin(async move {
                if ok {
                    Ok("spiffe://t/ns/a/sa/b".into())
                } else {
                    Err("no".into())
                }
            })
        }
    }

    #[tokio::test]
    async fn validations_are_cached() {
        let c = Cached::new(
            Counting(std::sync::atomic::AtomicUsize::new(0)),
            Duration::from_secs(60),
        );
        for _ in 0..5 {
            assert!(c.validate("good").await.is_ok());
            assert!(c.validate("bad").await.is_err());
        }
        assert_eq!(c.inner.0.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
