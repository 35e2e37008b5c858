//! HTTP basic authentication against the bcrypt hashes of a web config's `basic_auth_users`.
//!
//! bcrypt is slow on purpose (cost 10 takes 70–100 ms here), and Prometheus sends the same
//! credentials with every scrape. So, as exporter-toolkit does, a successful check is
//! remembered (a salted SHA-256 of the password, one per configured user, compared in constant
//! time) and later scrapes cost a hash; requests that queued behind the first check of the
//! same credentials pass as soon as it has. Checks that fail are not remembered: they run
//! bcrypt one at a time, off the async thread, so a flood of wrong passwords costs one core at
//! most and never blocks the runtime. A user that does not exist is checked against a fixed hash,
//! so the answer takes as long as for a real user and does not reveal which names exist.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, PoisonError,
    },
};

use axum::http::HeaderValue;
use base64::Engine as _;
use ring::{
    digest::{Context, SHA256},
    rand::{SecureRandom, SystemRandom},
};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

/// bcrypt of "fakepassword" at cost 10 (exporter-toolkit uses the same one).
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

#[derive(Debug)]
pub struct BasicAuth {
    /// User name to bcrypt hash, checked when the web config was loaded.
    users: BTreeMap<String, String>,
    /// Per-process salt of the remembered digests.
    salt: [u8; 16],
    /// User name to the digest of the last password that passed bcrypt.
    verified: Mutex<HashMap<String, Vec<u8>>>,
    /// One bcrypt at a time.
    bcrypt: Semaphore,
    /// bcrypt checks run so far.
    bcrypt_runs: AtomicU64,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let mut salt = [0; 16];
        // Without randomness the digests are merely unsalted; they stay in this process.
        let _ = SystemRandom::new().fill(&mut salt);
        BasicAuth {
            users,
            salt,
            verified: Mutex::new(HashMap::new()),
            bcrypt: Semaphore::new(1),
            bcrypt_runs: AtomicU64::new(0),
        }
    }

    /// Whether an `Authorization` header carries a configured user and its password.
    pub async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let digest = self.digest(&user, &password);
        if self.is_remembered(&user, &digest) {
            return true;
        }
        let (hash, real_user) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (UNKNOWN_USER_HASH.to_string(), false),
        };
        let Ok(_one_at_a_time) = self.bcrypt.acquire().await else {
            return false;
        };
        // Scrapes that queued with the same credentials pass once the first one has.
        if self.is_remembered(&user, &digest) {
            return true;
        }
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if matches && real_user {
            self.remembered().insert(user, digest);
        }
        matches && real_user
    }

    fn is_remembered(&self, user: &str, digest: &[u8]) -> bool {
        self.remembered()
            .get(user)
            .is_some_and(|known| bool::from(known.ct_eq(digest)))
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn digest(&self, user: &str, password: &[u8]) -> Vec<u8> {
        let mut context = Context::new(&SHA256);
        context.update(&self.salt);
        context.update(&(user.len() as u64).to_le_bytes());
        context.update(user.as_bytes());
        context.update(password);
        context.finish().as_ref().to_vec()
    }
}

/// User name and password of `Basic base64(user:password)`.
pub fn credentials(header: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let (scheme, token) = header.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user_password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(user_password);
        HeaderValue::from_str(&format!("Basic {token}")).expect("header")
    }

    #[test]
    fn credentials_are_decoded() {
        assert_eq!(
            credentials(&header("alice:se:cret")),
            Some(("alice".into(), b"se:cret".to_vec()))
        );
        assert_eq!(credentials(&header("no colon")), None);
        let bearer = HeaderValue::from_static("Bearer abc");
        assert_eq!(credentials(&bearer), None);
        assert_eq!(credentials(&HeaderValue::from_static("Basic !!!")), None);
    }

    #[tokio::test]
    async fn right_password_passes_and_is_remembered_wrong_ones_do_not() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let auth = BasicAuth::new([("alice".to_string(), hash)].into());
        assert!(auth.allows(Some(&header("alice:s3cret"))).await);
        assert_eq!(auth.remembered().len(), 1);
        assert!(auth.allows(Some(&header("alice:s3cret"))).await);
        assert!(!auth.allows(Some(&header("alice:wrong"))).await);
        assert!(!auth.allows(Some(&header("bob:s3cret"))).await);
        assert!(!auth.allows(None).await);
        assert_eq!(auth.remembered().len(), 1, "failures are not remembered");
    }

    #[tokio::test]
    async fn scrapers_arriving_together_cost_one_bcrypt() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let auth = std::sync::Arc::new(BasicAuth::new([("alice".to_string(), hash)].into()));
        let mut checks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let auth = std::sync::Arc::clone(&auth);
            checks.spawn(async move { auth.allows(Some(&header("alice:s3cret"))).await });
        }
        while let Some(allowed) = checks.join_next().await {
            assert!(allowed.expect("check"));
        }
        assert_eq!(auth.bcrypt_runs.load(Ordering::Relaxed), 1);
        assert!(!auth.allows(Some(&header("alice:nope"))).await);
        assert!(!auth.allows(Some(&header("alice:nope"))).await);
        assert_eq!(
            auth.bcrypt_runs.load(Ordering::Relaxed),
            3,
            "failures run bcrypt each time"
        );
    }
}
