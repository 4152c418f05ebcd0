//! Agent tokens: issue, list, revoke, and authenticate a presented token.
//! Tokens live in the store as hashes; every token is also held in memory,
//! so that authenticating a call costs a hash and a map lookup, not a read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use tokio_util::sync::CancellationToken;

use crate::domain::token::{AgentToken, MAX_DESCRIPTION_CHARS, MAX_TOKENS_PER_AGENT, TOKEN_PREFIX};
use crate::domain::{AgentId, Denial, Error, Result, Timestamp};
use crate::store::{Store, StoreError};

/// How stale a token's stored `last_used_at` may get.
const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);

/// A valid token: who it acts as, and what ends its streams.
#[derive(Debug)]
pub struct Grant {
    token: AgentToken,
    /// Microseconds since the epoch; 0: never used.
    last_used: AtomicI64,
    /// Cancelled when the token is revoked.
    revoked: CancellationToken,
}

impl Grant {
    pub fn agent_id(&self) -> &AgentId {
        &self.token.agent_id
    }

    pub fn token_id(&self) -> &str {
        &self.token.token_id
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        self.token.expires_at
    }

    pub fn revoked(&self) -> &CancellationToken {
        &self.revoked
    }

    fn metadata(&self) -> AgentToken {
        let used = self.last_used.load(Ordering::Relaxed);
        AgentToken {
            last_used_at: (used != 0).then(|| Timestamp::from_unix_micros(used)),
            ..self.token.clone()
        }
    }
}

pub struct Tokens {
    store: Arc<dyn Store>,
    /// By the token's hash.
    grants: RwLock<HashMap<String, Arc<Grant>>>,
    random: SystemRandom,
}

/// A newly issued token: the secret (shown once) and its metadata.
pub struct Issued {
    pub token: String,
    pub metadata: AgentToken,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

fn hash(token: &[u8]) -> String {
    hex(digest(&SHA256, token).as_ref())
}

fn grant(token: AgentToken) -> Arc<Grant> {
    Arc::new(Grant {
        last_used: AtomicI64::new(token.last_used_at.map_or(0, Timestamp::unix_micros)),
        token,
        revoked: CancellationToken::new(),
    })
}

impl Tokens {
    /// Loads every stored token.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let grants = store
            .tokens()
            .await?
            .into_iter()
            .map(|token| (token.hash.clone(), grant(token)))
            .collect();
        Ok(Self {
            store,
            grants: RwLock::new(grants),
            random: SystemRandom::new(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Grant>>> {
        self.grants.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Grant>>> {
        self.grants.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn random_hex(&self, bytes: usize) -> Result<String> {
        let mut buffer = vec![0; bytes];
        self.random
            .fill(&mut buffer)
            .map_err(|_| Error::internal("the system random generator failed"))?;
        Ok(hex(&buffer))
    }

    /// The grant of a presented token (which starts with `abt_`).
    pub fn authenticate(&self, token: &[u8]) -> Result<Arc<Grant>, Denial> {
        let grant = self
            .read()
            .get(&hash(token))
            .cloned()
            .ok_or(Denial::InvalidCredentials)?;
        let now = Timestamp::now();
        if grant.token.is_expired(now) {
            return Err(Denial::ExpiredToken);
        }
        let last = grant.last_used.load(Ordering::Relaxed);
        let stale = now.saturating_sub(LAST_USED_GRANULARITY).unix_micros() > last;
        if stale
            && grant
                .last_used
                .compare_exchange(last, now.unix_micros(), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (store, id) = (self.store.clone(), grant.token.token_id.clone());
            runtime.spawn(async move {
                if let Err(e) = store.touch_token(&id, now).await {
                    tracing::warn!(token_id = %id, error = %e, "could not record when the token was last used");
                }
            });
        }
        Ok(grant)
    }

    pub async fn issue(&self, agent_id: AgentId, ttl: Option<Duration>, description: String) -> Result<Issued> {
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(Error::invalid(
                "description",
                format!("is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        if ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(Error::invalid("ttl", "must be positive (leave it unset for no expiry)"));
        }
        let now = Timestamp::now();
        let (held, expired): (Vec<_>, Vec<_>) = self
            .list(&agent_id)
            .into_iter()
            .partition(|token| !token.is_expired(now));
        for token in expired {
            self.remove(&token.token_id).await?;
        }
        if held.len() >= MAX_TOKENS_PER_AGENT {
            return Err(Error::resource_exhausted(format!(
                "{agent_id} already holds {MAX_TOKENS_PER_AGENT} tokens; revoke one first"
            )));
        }
        let token = format!("{TOKEN_PREFIX}{}", self.random_hex(32)?);
        let metadata = AgentToken {
            token_id: format!("tok_{}", self.random_hex(8)?),
            agent_id,
            hash: hash(token.as_bytes()),
            description,
            created_at: now,
            expires_at: ttl.map(|ttl| now.saturating_add(ttl)),
            last_used_at: None,
        };
        self.store.put_token(metadata.clone()).await?;
        self.write().insert(metadata.hash.clone(), grant(metadata.clone()));
        Ok(Issued { token, metadata })
    }

    /// The agent's tokens, oldest first.
    pub fn list(&self, agent_id: &AgentId) -> Vec<AgentToken> {
        let mut tokens: Vec<_> = self
            .read()
            .values()
            .filter(|g| g.agent_id() == agent_id)
            .map(|g| g.metadata())
            .collect();
        tokens.sort_by(|a, b| (a.created_at, &a.token_id).cmp(&(b.created_at, &b.token_id)));
        tokens
    }

    /// Revokes the token (of `agent_id`, when given): its next call fails
    /// and its open streams end.
    pub async fn revoke(&self, token_id: &str, agent_id: Option<&AgentId>) -> Result<()> {
        let owner = self
            .read()
            .values()
            .find(|g| g.token_id() == token_id)
            .map(|g| g.agent_id().clone());
        match owner {
            Some(owner) if agent_id.is_none_or(|a| *a == owner) => self.remove(token_id).await,
            _ => Err(Error::not_found(match agent_id {
                Some(agent) => format!("token {token_id} of {agent} not found"),
                None => format!("token {token_id} not found"),
            })),
        }
    }

    async fn remove(&self, token_id: &str) -> Result<()> {
        self.store.delete_token(token_id).await?;
        let mut grants = self.write();
        if let Some(hash) = grants
            .iter()
            .find(|(_, g)| g.token_id() == token_id)
            .map(|(hash, _)| hash.clone())
            && let Some(grant) = grants.remove(&hash)
        {
            grant.revoked.cancel();
        }
        Ok(())
    }
}
