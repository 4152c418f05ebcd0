//! API-key check for gRPC calls. Health and reflection are not wrapped, so
//! they stay open to probes and tools.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

pub const API_KEY_HEADER: &str = "x-agent-api-key";

/// Accepts a call when no key is configured, or when it carries the key in
/// `x-agent-api-key: KEY` or `authorization: Bearer KEY`.
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

    /// Checks the presented credentials; the comparison takes the same time
    /// wherever the first differing byte is.
    pub fn check(&self, api_key: Option<&[u8]>, authorization: Option<&[u8]>) -> Result<(), &'static str> {
        let Some(expected) = &self.key else {
            return Ok(());
        };
        let bearer = authorization.and_then(|value| {
            let (scheme, token) = value.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
        });
        match api_key.or(bearer) {
            None => Err("missing API key: send metadata `x-agent-api-key: <key>` or `authorization: Bearer <key>`"),
            Some(given) if constant_time_eq(given, expected) => Ok(()),
            Some(_) => Err("invalid API key"),
        }
    }
}

impl Interceptor for ApiKeyAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata();
        let header = |name: &str| metadata.get(name).map(|v| v.as_bytes());
        self.check(header(API_KEY_HEADER), header("authorization"))
            .map_err(Status::unauthenticated)?;
        Ok(request)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // The length is not secret; the content is.
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_either_header_and_rejects_others() {
        let auth = ApiKeyAuth::new(Some("s3cret"));
        assert!(auth.check(Some(b"s3cret"), None).is_ok());
        assert!(auth.check(None, Some(b"Bearer s3cret")).is_ok());
        assert!(auth.check(None, Some(b"bearer s3cret")).is_ok());
        assert!(auth.check(Some(b"s3cres"), None).is_err());
        assert!(auth.check(None, Some(b"Basic s3cret")).is_err());
        assert!(auth.check(None, None).is_err());
        assert!(ApiKeyAuth::new(None).check(None, None).is_ok());
    }
}
