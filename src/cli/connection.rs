//! Where the bus is and how to talk to it: the global client options, one
//! channel, and the credentials (API key or agent token) on every call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use super::exit::with_sources;
use super::input;
use crate::api::API_KEY_HEADER;
use crate::pb::agent_service_client::AgentServiceClient;
use crate::pb::message_service_client::MessageServiceClient;
use crate::pb::session_service_client::SessionServiceClient;

/// Used to connect when no `--rpc-timeout` is given.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The bus: http://HOST:PORT (or HOST:PORT), https://HOST:PORT for TLS.
    #[arg(
        long,
        global = true,
        env = "AGENT_BUS_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub addr: String,

    /// Sent as `x-agent-api-key` metadata on every call.
    #[arg(
        long,
        global = true,
        env = "AGENT_BUS_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// An agent token (`abt_...`), sent as `authorization: Bearer`: the
    /// calls act as that agent.
    #[arg(
        long,
        global = true,
        env = "AGENT_BUS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "api_key"
    )]
    pub token: Option<String>,

    /// Deadline of each unary call and of connecting (e.g. 10s, 500ms);
    /// default: none (connecting: 10s). Streams are not limited.
    #[arg(long, global = true, value_name = "DURATION", value_parser = input::std_duration)]
    pub rpc_timeout: Option<Duration>,

    /// Indent the JSON of unary responses (streams stay one object per line).
    #[arg(long, global = true)]
    pub pretty: bool,

    /// With https://: trust servers signed by this PEM CA (besides the
    /// system's roots).
    #[arg(long, global = true, env = "AGENT_BUS_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// With https://: present this PEM client certificate (mutual TLS; needs --key).
    #[arg(long, global = true, env = "AGENT_BUS_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// The PEM private key of --cert.
    #[arg(long, global = true, env = "AGENT_BUS_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

pub type Sessions = SessionServiceClient<InterceptedService<Channel, Credentials>>;
pub type Agents = AgentServiceClient<InterceptedService<Channel, Credentials>>;
pub type Messages = MessageServiceClient<InterceptedService<Channel, Credentials>>;

/// One HTTP/2 connection to the bus, shared by the clients of a command.
pub struct Connection {
    channel: Channel,
    credentials: Credentials,
    rpc_timeout: Option<Duration>,
}

impl Connection {
    /// Checks the options, then connects (so an unreachable bus is reported
    /// as such, not as the failure of whatever call came first).
    pub async fn open(args: &ClientArgs) -> Result<Self, Status> {
        let (endpoint, credentials) = endpoint(args)?;
        let url = endpoint.uri().to_string();
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| Status::unavailable(with_sources(format!("cannot connect to {url}"), Some(&error))))?;
        Ok(Self {
            channel,
            credentials,
            rpc_timeout: args.rpc_timeout,
        })
    }

    /// Checks the options and connects on the first call, and again after
    /// the bus went away: for long-lived clients such as `agentbus mcp`.
    pub fn lazy(args: &ClientArgs) -> Result<Self, Status> {
        let (endpoint, credentials) = endpoint(args)?;
        Ok(Self {
            channel: endpoint.connect_lazy(),
            credentials,
            rpc_timeout: args.rpc_timeout,
        })
    }

    pub fn sessions(&self) -> Sessions {
        SessionServiceClient::with_interceptor(self.channel.clone(), self.credentials.clone())
    }

    pub fn agents(&self) -> Agents {
        AgentServiceClient::with_interceptor(self.channel.clone(), self.credentials.clone())
    }

    pub fn messages(&self) -> Messages {
        MessageServiceClient::with_interceptor(self.channel.clone(), self.credentials.clone())
    }

    /// A unary request, with the `--rpc-timeout` deadline when one was given.
    pub fn unary<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(timeout) = self.rpc_timeout {
            request.set_timeout(timeout);
        }
        request
    }
}

/// The endpoint and credentials the options describe.
fn endpoint(args: &ClientArgs) -> Result<(Endpoint, Credentials), Status> {
    let url = url(&args.addr)?;
    let credentials = Credentials::new(args.api_key.as_deref(), args.token.as_deref())?;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| Status::invalid_argument(format!("--addr: {url:?} is not a valid URL: {e}")))?
        .connect_timeout(args.rpc_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT));
    if let Some(tls) = tls_config(args, &url)? {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Status::invalid_argument(with_sources("TLS settings".into(), Some(&e))))?;
    }
    Ok((endpoint, credentials))
}

/// TLS settings for an https:// address; the TLS options without one are
/// refused rather than ignored.
fn tls_config(args: &ClientArgs, url: &str) -> Result<Option<ClientTlsConfig>, Status> {
    let given = args.ca.is_some() || args.cert.is_some() || args.key.is_some();
    if !url.starts_with("https://") {
        return if given {
            Err(Status::invalid_argument(
                "--ca, --cert and --key need an https:// address (--addr https://HOST:PORT)",
            ))
        } else {
            Ok(None)
        };
    }
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).map_err(|e| Status::invalid_argument(format!("{flag} {}: {e}", path.display())))
    };
    let mut tls = ClientTlsConfig::new().with_native_roots();
    if let Some(ca) = &args.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read("--ca", ca)?));
    }
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read("--cert", cert)?, read("--key", key)?));
        }
        (None, None) => {}
        _ => return Err(Status::invalid_argument("--cert and --key go together")),
    }
    Ok(Some(tls))
}

/// `--addr` as a URL: a missing scheme means plaintext HTTP/2.
fn url(addr: &str) -> Result<String, Status> {
    let addr = addr.trim().trim_end_matches('/');
    match addr.split_once("://") {
        None if addr.is_empty() => Err(Status::invalid_argument("--addr: empty address")),
        None => Ok(format!("http://{addr}")),
        Some(("http" | "https", _)) => Ok(addr.to_owned()),
        Some((scheme, _)) => Err(Status::invalid_argument(format!(
            "--addr: {addr}: unsupported scheme {scheme:?}; use http://HOST:PORT, https://HOST:PORT or HOST:PORT"
        ))),
    }
}

/// Adds `x-agent-api-key: KEY` or `authorization: Bearer TOKEN` to every
/// call when one is set.
#[derive(Clone)]
pub struct Credentials(Option<(&'static str, AsciiMetadataValue)>);

impl Credentials {
    fn new(key: Option<&str>, token: Option<&str>) -> Result<Self, Status> {
        let (flag, header, value) = match (key, token) {
            (Some(key), _) => ("--api-key", API_KEY_HEADER, key.to_owned()),
            (None, Some(token)) => ("--token", "authorization", format!("Bearer {token}")),
            (None, None) => return Ok(Self(None)),
        };
        let mut value = MetadataValue::try_from(value).map_err(|_| {
            Status::invalid_argument(format!("{flag}: must be printable ASCII (it is sent as gRPC metadata)"))
        })?;
        // Never indexed by HPACK, so it cannot leak through compression.
        value.set_sensitive(true);
        Ok(Self(Some((header, value))))
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some((header, value)) = &self.0 {
            request.metadata_mut().insert(*header, value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_are_plaintext_http() {
        assert_eq!(url("localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(url(" http://10.0.0.1:80/ ").unwrap(), "http://10.0.0.1:80");
        assert_eq!(url("[::1]:8080").unwrap(), "http://[::1]:8080");
        assert_eq!(url("https://bus:443").unwrap(), "https://bus:443");
        for bad in ["", "grpc://bus:1"] {
            let status = url(bad).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(status.message().starts_with("--addr: "), "{}", status.message());
        }
    }

    #[test]
    fn credentials_must_fit_in_metadata() {
        assert!(Credentials::new(Some("s3cret"), None).is_ok());
        assert!(Credentials::new(None, Some("abt_00")).is_ok());
        assert!(Credentials::new(None, None).is_ok());
        assert!(Credentials::new(Some("bad\nkey"), None).is_err());
        let status = Credentials::new(None, Some("bad\ntoken")).err().unwrap();
        assert!(status.message().starts_with("--token: "), "{}", status.message());
    }
}
