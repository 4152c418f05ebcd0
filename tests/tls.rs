//! TLS and mutual TLS on the one port, black box: certificates made in the
//! test with rcgen, gRPC through tonic, HTTP/1.1 and HTTP/2 through reqwest.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentbus::pb;
use common::Bus;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const KEY: &str = "s3cret";

/// A CA that signs server and client certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM) for these subject alternative names.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// (certificate PEM, key PEM) of a client certificate whose SAN is the
    /// URI `uri` (an agent id).
    fn issue_uri(&self, uri: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate for localhost and 127.0.0.1 to `dir`.
    fn write_server_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(&["localhost", "127.0.0.1"]);
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }
}

async fn start(dir: &Path, ca: &Ca, client_ca: Option<&Ca>) -> Bus {
    let (cert, key) = ca.write_server_files(dir);
    let mut args = vec![
        "--api-key".to_owned(),
        KEY.to_owned(),
        "--store".to_owned(),
        "memory".to_owned(),
        "--tls-cert".to_owned(),
        cert.display().to_string(),
        "--tls-key".to_owned(),
        key.display().to_string(),
    ];
    if let Some(client_ca) = client_ca {
        let path = dir.join("client-ca.pem");
        std::fs::write(&path, client_ca.pem()).unwrap();
        args.extend(["--tls-client-ca".to_owned(), path.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Bus::start(&args).await
}

async fn channel(
    bus: &Bus,
    trusted: &Ca,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trusted.pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{}", bus.addr))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn list_agents(channel: Channel) -> Result<pb::ListAgentsResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::ListAgentsRequest::default());
    request.metadata_mut().insert("x-agent-api-key", KEY.parse().unwrap());
    pb::agent_service_client::AgentServiceClient::new(channel)
        .list_agents(request)
        .await
        .map(tonic::Response::into_inner)
}

fn https(trusted: &Ca, bus: &Bus) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(trusted.pem().as_bytes()).unwrap())
        .resolve("localhost", bus.addr)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn grpc_and_http_share_the_tls_port_and_plaintext_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("agentbus test CA");
    let bus = start(dir.path(), &ca, None).await;

    let grpc = channel(&bus, &ca, None).await.expect("TLS channel");
    list_agents(grpc).await.expect("gRPC over TLS");

    let url = format!("https://localhost:{}/health", bus.addr.port());
    let h2 = https(&ca, &bus).get(&url).send().await.expect("HTTPS");
    assert_eq!(
        (h2.status().as_u16(), h2.version()),
        (200, reqwest::Version::HTTP_2),
        "ALPN h2"
    );
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("localhost", bus.addr)
        .http1_only()
        .build()
        .unwrap()
        .get(format!("https://localhost:{}/agents", bus.addr.port()))
        .header("x-agent-api-key", KEY)
        .send()
        .await
        .expect("HTTP/1.1 over TLS");
    assert_eq!((h1.status().as_u16(), h1.version()), (200, reqwest::Version::HTTP_11));

    // A client that does not speak TLS is turned away at once.
    let started = Instant::now();
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", bus.addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plaintext HTTP was answered: {plain:?}");
    let plain_grpc = Channel::from_shared(format!("http://{}", bus.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain_grpc {
        assert!(list_agents(channel).await.is_err(), "plaintext gRPC was answered");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // A client that trusts another CA refuses the server.
    let stranger = Ca::new("some other CA");
    assert!(https(&stranger, &bus).get(&url).send().await.is_err());
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let bus = start(dir.path(), &ca, Some(&clients)).await;

    let identity = clients.issue(&["claude-code://orchestrator"]);
    let grpc = channel(&bus, &ca, Some(identity)).await.expect("mTLS channel");
    list_agents(grpc).await.expect("gRPC with a client certificate");

    let without = match channel(&bus, &ca, None).await {
        Ok(channel) => list_agents(channel).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(without.is_err(), "no client certificate was accepted");

    let outsider = Ca::new("not the client CA").issue(&["codex://intruder"]);
    let foreign = match channel(&bus, &ca, Some(outsider)).await {
        Ok(channel) => list_agents(channel).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(foreign.is_err(), "a certificate of another CA was accepted");
}

#[tokio::test]
async fn a_client_certificate_naming_an_agent_authenticates_as_that_agent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let bus = start(dir.path(), &ca, Some(&clients)).await;
    let register = |agent_id: &str| pb::RegisterAgentRequest {
        agent: Some(pb::AgentDescriptor {
            agent_id: agent_id.into(),
            ..Default::default()
        }),
        update: true,
    };

    // No key, no token: the certificate's SAN URI is the caller.
    let grpc = channel(&bus, &ca, Some(clients.issue_uri("claude-code://orchestrator")))
        .await
        .expect("mTLS channel");
    let mut agents = pb::agent_service_client::AgentServiceClient::new(grpc);
    agents
        .register_agent(register("claude-code://orchestrator"))
        .await
        .expect("an agent registers itself");
    let other = agents.register_agent(register("opencode://backend")).await;
    common::assert_status(
        other,
        tonic::Code::PermissionDenied,
        "is not the caller claude-code://orchestrator",
    );

    // A certificate naming no agent carries no identity: the key is needed.
    let anonymous = channel(&bus, &ca, Some(clients.issue(&["client.example"])))
        .await
        .expect("mTLS channel");
    let mut agents = pb::agent_service_client::AgentServiceClient::new(anonymous);
    let refused = agents.register_agent(register("opencode://backend")).await;
    common::assert_status(refused, tonic::Code::Unauthenticated, "missing API key");
}

#[tokio::test]
async fn certificates_reload_on_sighup_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::new("first CA");
    let bus = start(dir.path(), &first, None).await;
    let open = channel(&bus, &first, None).await.unwrap();
    list_agents(open.clone()).await.unwrap();

    // New files from another CA, then SIGHUP.
    let second = Ca::new("second CA");
    second.write_server_files(dir.path());
    bus.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match channel(&bus, &second, None).await {
            Ok(fresh) if list_agents(fresh.clone()).await.is_ok() => break,
            _ => assert!(
                Instant::now() < deadline,
                "the new certificate was not served:\n{}",
                bus.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    list_agents(open.clone())
        .await
        .expect("the open connection survives the reload");
    let old = channel(&bus, &first, None).await;
    assert!(
        match old {
            Ok(channel) => list_agents(channel).await.is_err(),
            Err(_) => true,
        },
        "new connections still got the old certificate"
    );

    // A broken file keeps the certificate in use.
    std::fs::write(dir.path().join("server.pem"), "not a certificate").unwrap();
    bus.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bus.log().contains("TLS reload failed") {
        assert!(Instant::now() < deadline, "no reload failure logged:\n{}", bus.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = channel(&bus, &second, None).await.expect("still served");
    list_agents(fresh).await.expect("the previous certificate is kept");
    list_agents(open).await.expect("and the first connection is still open");
}

#[tokio::test]
async fn the_cli_speaks_tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let bus = start(dir.path(), &ca, Some(&clients)).await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (cert, key) = clients.issue(&["opencode://backend"]);
    let (cert_file, key_file) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let addr = format!("https://127.0.0.1:{}", bus.addr.port());
    let run = |extra: &[&std::ffi::OsStr]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentbus"))
            .args(["agents", "list", "--api-key", KEY, "--rpc-timeout", "5s"])
            .args(extra)
            .env_remove("AGENT_BUS_URL")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let (ok, stdout, stderr) = run(&[
        &os("--addr"),
        &os(&addr),
        &os("--ca"),
        ca_file.as_os_str(),
        &os("--cert"),
        cert_file.as_os_str(),
        &os("--key"),
        key_file.as_os_str(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"agents\""), "{stdout}");

    let (ok, _, stderr) = run(&[&os("--addr"), &os(&addr), &os("--ca"), ca_file.as_os_str()]);
    assert!(!ok, "the server required a client certificate");
    assert!(!stderr.is_empty());

    let plain = format!("http://127.0.0.1:{}", bus.addr.port());
    let (ok, _, stderr) = run(&[&os("--addr"), &os(&plain), &os("--ca"), ca_file.as_os_str()]);
    assert!(!ok);
    assert!(stderr.contains("need an https:// address"), "{stderr}");
}
