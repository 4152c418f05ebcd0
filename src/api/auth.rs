//! Who a caller is, from the credentials it presents. Transports pass the
//! header values; health and reflection ask for none, so they stay open to
//! probes and tools.

use std::sync::Arc;

use subtle::ConstantTimeEq;

pub const API_KEY_HEADER: &str = "x-agent-api-key";

/// Who a call acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// No key is configured: every caller is trusted (loopback by default).
    Anonymous,
    /// The caller presented the API key.
    Admin,
}

/// Accepts a call when no key is configured, or when it carries the key in
/// `x-agent-api-key: KEY` or `authorization: Bearer KEY`. Every credential
/// it carries must be valid: a right key beside a wrong one fails.
#[derive(Clone, Default)]
pub struct ApiKeyAuth {
    key: Option<Arc<[u8]>>,
}

impl ApiKeyAuth {
    pub fn new(key: Option<&str>) -> Self {
        Self {
            key: key.map(|k| Arc::from(k.as_bytes())),
        }
    }

    /// Checks every value of the two headers; each comparison takes the same
    /// time wherever the first differing byte is.
    pub fn authenticate<'a>(
        &self,
        api_keys: impl IntoIterator<Item = &'a [u8]>,
        authorizations: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Identity, &'static str> {
        let Some(expected) = &self.key else {
            return Ok(Identity::Anonymous);
        };
        let mut presented = 0;
        for authorization in authorizations {
            let token = authorization
                .split_at_checked(7)
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
                .map(|(_, token)| token)
                .ok_or("invalid authorization header: expected `Bearer <key>`")?;
            check_key(token, expected)?;
            presented += 1;
        }
        for key in api_keys {
            check_key(key, expected)?;
            presented += 1;
        }
        if presented == 0 {
            return Err("missing API key: send metadata `x-agent-api-key: <key>` or `authorization: Bearer <key>`");
        }
        Ok(Identity::Admin)
    }
}

fn check_key(given: &[u8], expected: &[u8]) -> Result<(), &'static str> {
    // The length is not secret (subtle answers false at once when it
    // differs); the content is.
    if bool::from(given.ct_eq(expected)) {
        Ok(())
    } else {
        Err("invalid API key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(auth: &ApiKeyAuth, key: Option<&[u8]>, authorization: Option<&[u8]>) -> Result<(), &'static str> {
        auth.authenticate(key, authorization).map(|_| ())
    }

    #[test]
    fn accepts_either_header_and_rejects_others() {
        let auth = ApiKeyAuth::new(Some("s3cret"));
        assert!(check(&auth, Some(b"s3cret"), None).is_ok());
        assert!(check(&auth, None, Some(b"Bearer s3cret")).is_ok());
        assert!(check(&auth, None, Some(b"bearer s3cret")).is_ok());
        assert!(check(&auth, Some(b"s3cret"), Some(b"Bearer s3cret")).is_ok());
        assert!(check(&auth, Some(b"s3cres"), None).is_err());
        assert!(check(&auth, None, Some(b"Basic s3cret")).is_err());
        assert!(check(&auth, None, None).is_err());
        assert_eq!(ApiKeyAuth::new(None).authenticate(None, None), Ok(Identity::Anonymous));
        assert_eq!(auth.authenticate(Some(&b"s3cret"[..]), None), Ok(Identity::Admin));
    }

    #[test]
    fn any_invalid_credential_fails_the_call() {
        let auth = ApiKeyAuth::new(Some("s3cret"));
        assert_eq!(
            check(&auth, Some(b"s3cret"), Some(b"Bearer wrong")),
            Err("invalid API key")
        );
        assert_eq!(
            check(&auth, Some(b"wrong"), Some(b"Bearer s3cret")),
            Err("invalid API key")
        );
        assert!(check(&auth, Some(b"s3cret"), Some(b"Basic czNjcmV0")).is_err());
        let two_keys: [&[u8]; 2] = [b"s3cret", b"wrong"];
        assert!(auth.authenticate(two_keys, None).is_err());
    }
}
