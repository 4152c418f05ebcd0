//! Who a caller is, from the credentials it presents: the admin key, an
//! agent token (`abt_...`) or a client certificate naming an agent. Health
//! and reflection ask for none, so they stay open to probes and tools.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::app::tokens::{Grant, Tokens};
use crate::domain::access::Actor;
use crate::domain::token::TOKEN_PREFIX;
use crate::domain::{AgentId, Denial};

pub const API_KEY_HEADER: &str = "x-agent-api-key";

/// Who a call acts as.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No key is configured: every caller is trusted (loopback by default).
    Anonymous,
    /// The caller presented the admin key.
    Admin,
    /// One agent: by token (its grant), or by client certificate.
    Agent {
        agent_id: AgentId,
        grant: Option<Arc<Grant>>,
    },
}

impl Identity {
    /// What the access rules see: everyone but an agent may do everything.
    pub fn actor(&self) -> Actor {
        match self {
            Self::Anonymous | Self::Admin => Actor::Admin,
            Self::Agent { agent_id, .. } => Actor::Agent(agent_id.clone()),
        }
    }

    pub fn agent_id(&self) -> Option<&AgentId> {
        match self {
            Self::Agent { agent_id, .. } => Some(agent_id),
            _ => None,
        }
    }

    pub fn grant(&self) -> Option<&Arc<Grant>> {
        match self {
            Self::Agent { grant, .. } => grant.as_ref(),
            _ => None,
        }
    }

    /// Whether two credentials of one call name the same caller.
    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Agent { agent_id: a, .. }, Self::Agent { agent_id: b, .. }) => a == b,
            (Self::Agent { .. }, _) | (_, Self::Agent { .. }) => false,
            _ => true,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("anonymous"),
            Self::Admin => f.write_str("admin"),
            Self::Agent {
                agent_id,
                grant: Some(grant),
            } => write!(f, "{agent_id} (token {})", grant.token_id()),
            Self::Agent { agent_id, grant: None } => write!(f, "{agent_id} (client certificate)"),
        }
    }
}

/// Why authentication failed, and the message for the caller.
pub type Refusal = (Denial, &'static str);

/// Accepts the admin key and agent tokens in `x-agent-api-key: KEY` or
/// `authorization: Bearer KEY`, and a client certificate's agent. Every
/// credential a call carries must be valid, and a token must name the same
/// agent as the other credentials; the admin key wins over a certificate
/// (the operator may hold one that names an agent).
#[derive(Clone)]
pub struct Authenticator {
    key: Option<Arc<[u8]>>,
    tokens: Arc<Tokens>,
}

impl Authenticator {
    pub fn new(key: Option<&str>, tokens: Arc<Tokens>) -> Self {
        Self {
            key: key.map(|k| Arc::from(k.as_bytes())),
            tokens,
        }
    }

    /// Checks every value of the two headers; admin key comparisons take
    /// the same time wherever the first differing byte is. `peer` is the
    /// agent of the connection's client certificate.
    pub fn authenticate<'a>(
        &self,
        api_keys: impl IntoIterator<Item = &'a [u8]>,
        authorizations: impl IntoIterator<Item = &'a [u8]>,
        peer: Option<&AgentId>,
    ) -> Result<Identity, Refusal> {
        let mut found: Option<Identity> = None;
        let bearer = authorizations.into_iter().filter_map(|authorization| {
            let token = authorization
                .split_at_checked(7)
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
                .map(|(_, token)| token);
            match token {
                Some(token) => Some(Ok(token)),
                // Without a key only tokens are checked: another scheme
                // (a proxy's Basic, say) is none of ours.
                None if self.key.is_none() => None,
                None => Some(Err((
                    Denial::InvalidCredentials,
                    "invalid authorization header: expected `Bearer <key or token>`",
                ))),
            }
        });
        for credential in bearer.chain(api_keys.into_iter().map(Ok)) {
            let identity = self.identify(credential?)?;
            match &found {
                Some(known) if !known.same(&identity) => {
                    return Err((
                        Denial::InvalidCredentials,
                        "the credentials of the call name different callers",
                    ));
                }
                // A token or the key says more than "no key configured".
                Some(Identity::Agent { .. } | Identity::Admin) => {}
                _ => found = Some(identity),
            }
        }
        match (found, peer) {
            (Some(Identity::Agent { agent_id, .. }), Some(peer)) if &agent_id != peer => Err((
                Denial::InvalidCredentials,
                "the token names another agent than the client certificate",
            )),
            (Some(Identity::Anonymous) | None, Some(peer)) => Ok(Identity::Agent {
                agent_id: peer.clone(),
                grant: None,
            }),
            (Some(identity), _) => Ok(identity),
            (None, None) if self.key.is_some() => Err((
                Denial::MissingCredentials,
                "missing API key or agent token: send metadata `x-agent-api-key: <key or token>` or `authorization: Bearer <key or token>`",
            )),
            (None, None) => Ok(Identity::Anonymous),
        }
    }

    fn identify(&self, credential: &[u8]) -> Result<Identity, Refusal> {
        if credential.starts_with(TOKEN_PREFIX.as_bytes()) {
            let grant = self.tokens.authenticate(credential).map_err(|denial| {
                let message = match denial {
                    Denial::ExpiredToken => "the agent token has expired",
                    _ => "invalid agent token (unknown or revoked)",
                };
                (denial, message)
            })?;
            return Ok(Identity::Agent {
                agent_id: grant.agent_id().clone(),
                grant: Some(grant),
            });
        }
        let Some(expected) = &self.key else {
            // No key is configured: other credentials are not checked.
            return Ok(Identity::Anonymous);
        };
        // The length is not secret (subtle answers false at once when it
        // differs); the content is.
        if bool::from(credential.ct_eq(expected)) {
            Ok(Identity::Admin)
        } else {
            Err((Denial::InvalidCredentials, "invalid API key"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    async fn authenticator(key: Option<&str>) -> (Authenticator, Arc<Tokens>) {
        let tokens = Arc::new(Tokens::load(Arc::new(MemoryStore::new(8))).await.unwrap());
        (Authenticator::new(key, tokens.clone()), tokens)
    }

    fn agent(id: &str) -> AgentId {
        AgentId::parse(id).unwrap()
    }

    fn who(result: Result<Identity, Refusal>) -> Result<String, Denial> {
        result
            .map(|identity| identity.to_string())
            .map_err(|(denial, _)| denial)
    }

    #[tokio::test]
    async fn keys_and_tokens_in_either_header() {
        let (auth, tokens) = authenticator(Some("s3cret")).await;
        let token = tokens.issue(agent("codex://a"), None, String::new()).await.unwrap();
        let bearer = format!("Bearer {}", token.token);
        let none: [&[u8]; 0] = [];
        let as_agent = format!("codex://a (token {})", token.metadata.token_id);
        assert_eq!(who(auth.authenticate([&b"s3cret"[..]], none, None)), Ok("admin".into()));
        assert_eq!(
            who(auth.authenticate(none, [&b"bearer s3cret"[..]], None)),
            Ok("admin".into())
        );
        assert_eq!(
            who(auth.authenticate([token.token.as_bytes()], none, None)),
            Ok(as_agent.clone())
        );
        assert_eq!(who(auth.authenticate(none, [bearer.as_bytes()], None)), Ok(as_agent));
        assert_eq!(
            who(auth.authenticate(none, none, None)),
            Err(Denial::MissingCredentials)
        );
        assert_eq!(
            who(auth.authenticate([&b"s3cres"[..]], none, None)),
            Err(Denial::InvalidCredentials)
        );
        assert_eq!(
            who(auth.authenticate(none, [&b"Basic s3cret"[..]], None)),
            Err(Denial::InvalidCredentials)
        );
        let forged = format!("abt_{}", "0".repeat(64));
        assert_eq!(
            who(auth.authenticate([forged.as_bytes()], none, None)),
            Err(Denial::InvalidCredentials)
        );
    }

    #[tokio::test]
    async fn every_credential_must_be_valid_and_name_one_caller() {
        let (auth, tokens) = authenticator(Some("s3cret")).await;
        let token = tokens
            .issue(agent("codex://a"), None, String::new())
            .await
            .unwrap()
            .token;
        let wrong: [&[u8]; 2] = [b"s3cret", b"wrong"];
        assert!(auth.authenticate(wrong, [&b"Bearer s3cret"[..]], None).is_err());
        let mixed = auth.authenticate([&b"s3cret"[..]], [format!("Bearer {token}").as_bytes()], None);
        assert_eq!(who(mixed), Err(Denial::InvalidCredentials));
        // The token and the client certificate must agree.
        let none: [&[u8]; 0] = [];
        let other = agent("codex://b");
        assert!(auth.authenticate([token.as_bytes()], none, Some(&other)).is_err());
        assert_eq!(
            who(auth.authenticate(none, none, Some(&other))),
            Ok("codex://b (client certificate)".into())
        );
        // The admin key is the operator's, whatever certificate carries it.
        let admin_and_agent = auth.authenticate([&b"s3cret"[..]], none, Some(&other));
        assert_eq!(who(admin_and_agent), Ok("admin".into()));
    }

    #[tokio::test]
    async fn without_a_key_only_tokens_are_checked() {
        let (auth, tokens) = authenticator(None).await;
        let none: [&[u8]; 0] = [];
        assert_eq!(
            who(auth.authenticate([&b"anything"[..]], none, None)),
            Ok("anonymous".into())
        );
        let issued = tokens.issue(agent("codex://a"), None, String::new()).await.unwrap();
        assert!(who(auth.authenticate([issued.token.as_bytes()], none, None)).is_ok());
        tokens.revoke(&issued.metadata.token_id, None).await.unwrap();
        assert_eq!(
            who(auth.authenticate([issued.token.as_bytes()], none, None)),
            Err(Denial::InvalidCredentials)
        );
    }
}
