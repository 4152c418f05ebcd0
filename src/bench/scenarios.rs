//! The scenarios against agentbus itself (and the echo peer, which speaks
//! the same contract).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use prost_types::value::Kind;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::driver::{self, Measured, Timing, histogram};
use super::nodes::Nodes;
use super::pause;
use super::process::{self, CpuProbe, CpuUsed, CpuWindow, Spawned};
use super::{BenchArgs, Report, Scenario};
use crate::pb;
use crate::pb::agent_service_client::AgentServiceClient;
use crate::pb::message_service_client::MessageServiceClient;
use crate::pb::session_service_client::SessionServiceClient;

const CLIENT: &str = "bench://client";

#[derive(Clone)]
struct Key(Option<MetadataValue<Ascii>>);

impl Interceptor for Key {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("x-agent-api-key", key.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Key>;

/// Which nodes the connections go to: sender connections round robin over
/// `senders`, streams (receivers, responders, watchers) round robin over
/// `streams`.
struct Layout {
    senders: Vec<usize>,
    streams: Vec<usize>,
}

impl Layout {
    /// Everything round robin over every node, except e2e on several nodes:
    /// senders on the first node, receivers on the others, so that every
    /// message crosses from one node to another.
    fn for_run(args: &BenchArgs, nodes: usize) -> Self {
        let all: Vec<usize> = (0..nodes.max(1)).collect();
        if args.scenario == Scenario::E2e && nodes >= 2 {
            Self {
                senders: vec![0],
                streams: all[1..].to_vec(),
            }
        } else {
            Self {
                senders: all.clone(),
                streams: all,
            }
        }
    }

    fn single() -> Self {
        Self {
            senders: vec![0],
            streams: vec![0],
        }
    }

    fn split(&self) -> bool {
        self.senders != self.streams
    }
}

/// Connections to the bus under test: one node or several.
struct Bus {
    /// Each node's address.
    urls: Vec<String>,
    key: Key,
    api_key: Option<String>,
    layout: Layout,
    /// The senders' `--connections`.
    senders: Vec<Channel>,
    /// Each node's connections: the senders' on it, those of receivers
    /// placed apart from the senders, and one more (node 0's for setup).
    by_node: Vec<Vec<Channel>>,
    probe: CpuProbe,
    label: String,
    store: Option<&'static str>,
    nodes: Option<usize>,
    _spawned: Option<Nodes>,
    _peer: Option<Spawned>,
}

impl Bus {
    async fn open(args: &BenchArgs) -> Result<Self, String> {
        match args.spawn {
            Some(store) => {
                let nodes = Nodes::start(args, store).await?;
                let count = args.nodes.max(1) as usize;
                let plural = if count == 1 { "" } else { "s" };
                let mut bus = Self::connect(
                    args,
                    nodes.urls(),
                    Layout::for_run(args, count),
                    nodes.probe(),
                    format!("agentbus ({}, {count} node{plural})", store.name()),
                )
                .await?;
                bus.store = Some(store.name());
                bus.nodes = Some(count);
                bus._spawned = Some(nodes);
                Ok(bus)
            }
            None => {
                let probe = CpuProbe {
                    pids: args.server_pid.into_iter().collect(),
                    postgres: false,
                };
                let label = format!("agentbus at {}", args.addr);
                let mut bus = Self::connect(args, vec![normalize(&args.addr)], Layout::single(), probe, label).await?;
                bus.nodes = Some(1);
                Ok(bus)
            }
        }
    }

    async fn connect(
        args: &BenchArgs,
        urls: Vec<String>,
        layout: Layout,
        probe: CpuProbe,
        label: String,
    ) -> Result<Self, String> {
        let key = match &args.api_key {
            Some(k) => Some(k.parse().map_err(|_| "the API key must be ASCII".to_owned())?),
            None => None,
        };
        let mut by_node = vec![Vec::new(); urls.len()];
        let mut senders = Vec::new();
        for k in 0..args.connections.max(1) {
            let node = layout.senders[k % layout.senders.len()];
            let channel = open_channel(&urls[node]).await?;
            senders.push(channel.clone());
            by_node[node].push(channel);
        }
        // Receivers kept apart from the senders get as many connections.
        for k in 0..args.connections.max(1) {
            let node = layout.streams[k % layout.streams.len()];
            if !layout.senders.contains(&node) {
                by_node[node].push(open_channel(&urls[node]).await?);
            }
        }
        // One more connection per node, for receivers and setup.
        for (node, url) in urls.iter().enumerate() {
            by_node[node].push(open_channel(url).await?);
        }
        Ok(Self {
            urls,
            key: Key(key),
            api_key: args.api_key.clone(),
            layout,
            senders,
            by_node,
            probe,
            label,
            store: None,
            nodes: None,
            _spawned: None,
            _peer: None,
        })
    }

    /// The connection of sender `i`.
    fn channel(&self, i: usize) -> Channel {
        self.senders[i % self.senders.len()].clone()
    }

    /// The connection of stream `i` (a receiver or a watcher).
    fn stream_channel(&self, i: usize) -> Channel {
        let streams = &self.layout.streams;
        let channels = &self.by_node[streams[i % streams.len()]];
        channels[(i / streams.len()) % channels.len()].clone()
    }

    /// The first node's own connection, for setup.
    fn control(&self) -> Channel {
        let channels = &self.by_node[0];
        channels[channels.len() - 1].clone()
    }

    /// The address sender `i` uses (http-send opens its own connections).
    fn sender_url(&self, i: usize) -> &str {
        &self.urls[self.layout.senders[i % self.layout.senders.len()]]
    }

    fn messages(&self, channel: Channel) -> MessageServiceClient<Authed> {
        MessageServiceClient::with_interceptor(channel, self.key.clone()).max_decoding_message_size(64 << 20)
    }

    fn sessions(&self, channel: Channel) -> SessionServiceClient<Authed> {
        SessionServiceClient::with_interceptor(channel, self.key.clone()).max_decoding_message_size(64 << 20)
    }

    async fn register(&self, ids: &[String]) -> Result<(), String> {
        let mut agents = AgentServiceClient::with_interceptor(self.control(), self.key.clone());
        for id in ids {
            let request = pb::RegisterAgentRequest {
                agent: Some(pb::AgentDescriptor {
                    agent_id: id.clone(),
                    ..Default::default()
                }),
                update: true,
            };
            agents
                .register_agent(request)
                .await
                .map_err(|s| format!("cannot register {id}: {}", s.message()))?;
        }
        Ok(())
    }

    fn cpu_window(&self, timing: Timing) -> CpuWindow {
        CpuWindow::start(self.probe.clone(), timing.warmup)
    }

    /// A report on this bus, naming its store, its nodes and, when senders
    /// and receivers are on different nodes, which.
    fn report(&self, args: &BenchArgs, scenario: &str, measured: &Measured, cpu: Option<&CpuUsed>) -> Report {
        let mut report = Report::new(args, scenario, self.label.clone(), measured, cpu);
        report.store = self.store.map(str::to_owned);
        report.nodes = self.nodes;
        if self.layout.split() {
            report
                .extra
                .insert("senders_on_nodes".into(), json!(self.layout.senders));
            report
                .extra
                .insert("receivers_on_nodes".into(), json!(self.layout.streams));
        }
        report
    }
}

async fn open_channel(url: &str) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("bad address {url}: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

fn normalize(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Registers `count` receiving agents and the sending client; returns the
/// receivers' ids.
async fn register_sinks(bus: &Bus, count: usize) -> Result<Vec<String>, String> {
    let sinks: Vec<String> = (0..count.max(1)).map(|i| format!("bench://sink-{i}")).collect();
    let mut agents = sinks.clone();
    agents.push(CLIENT.to_owned());
    bus.register(&agents).await?;
    Ok(sinks)
}

pub(super) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A payload of about `bytes` bytes of JSON: `{"data":"xx..."}`, plus the
/// send time when `stamp` is set.
fn payload(bytes: usize, stamp: Option<(u64, bool)>) -> prost_types::Value {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "data".to_owned(),
        prost_types::Value {
            kind: Some(Kind::StringValue("x".repeat(bytes.saturating_sub(11)))),
        },
    );
    if let Some((sent_at, measured)) = stamp {
        fields.insert(
            "sent_at".to_owned(),
            prost_types::Value {
                kind: Some(Kind::NumberValue(sent_at as f64)),
            },
        );
        fields.insert(
            "measured".to_owned(),
            prost_types::Value {
                kind: Some(Kind::BoolValue(measured)),
            },
        );
    }
    prost_types::Value {
        kind: Some(Kind::StructValue(prost_types::Struct { fields })),
    }
}

fn message(from: &str, to: &str, payload: prost_types::Value, sync: bool) -> pb::Message {
    pb::Message {
        sender: Some(pb::AgentRef {
            agent_id: from.to_owned(),
            ..Default::default()
        }),
        recipient: Some(pb::AgentRef {
            agent_id: to.to_owned(),
            ..Default::default()
        }),
        message_type: pb::MessageType::TaskRequest as i32,
        payload: Some(payload),
        routing: sync.then(|| pb::Routing {
            timeout: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
            delivery_mode: pb::DeliveryMode::Sync as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn field(message: &pb::Message, name: &str) -> Option<Kind> {
    match &message.payload.as_ref()?.kind {
        Some(Kind::StructValue(s)) => s.fields.get(name)?.kind.clone(),
        _ => None,
    }
}

/// What receivers do with each delivery besides acking it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnDelivery {
    Ack,
    /// Ack and answer it (send-sync).
    Reply,
    /// Ack and record the latency since `sent_at` (e2e).
    Time,
}

/// Receivers: one inbox stream per agent, acking every delivery.
struct Receivers {
    acked: Arc<AtomicU64>,
    latency: Arc<Mutex<Histogram<u64>>>,
    /// e2e: each measured arrival's send time and latency, in µs.
    arrivals: Arc<Mutex<Vec<(u64, u64)>>>,
    received: Arc<Mutex<HashSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Receivers {
    async fn start(bus: &Bus, agents: &[String], mode: OnDelivery, ack_batch: u32) -> Result<Self, String> {
        let acked = Arc::new(AtomicU64::new(0));
        let latency = Arc::new(Mutex::new(histogram()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(HashSet::new()));
        // A message sent before these receivers started belongs to an earlier
        // round (e2e's rates): one its receivers were delivered but had not
        // acknowledged when they stopped comes again, and is not this round's.
        let since = now_micros();
        let mut tasks = Vec::new();
        for (i, agent) in agents.iter().enumerate() {
            let client = bus.messages(bus.stream_channel(i));
            let mut stream = client
                .clone()
                .receive_messages(pb::ReceiveMessagesRequest {
                    agent_id: agent.clone(),
                    max_in_flight: 0,
                })
                .await
                .map_err(|s| format!("cannot open the inbox of {agent}: {}", s.message()))?
                .into_inner();
            let (to_ack, ids) = mpsc::unbounded_channel();
            let acker = Acker {
                client: client.clone(),
                agent: agent.clone(),
                acked: acked.clone(),
            };
            tasks.push(tokio::spawn(acker.run(ids, ack_batch as usize)));
            let (latency, arrivals) = (latency.clone(), arrivals.clone());
            let (received, agent) = (received.clone(), agent.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(item)) = stream.message().await {
                    let Some(pb::receive_messages_response::Kind::Delivery(delivery)) = item.kind else {
                        continue;
                    };
                    let Some(message) = delivery.message else { continue };
                    if mode == OnDelivery::Time
                        && let (Some(Kind::NumberValue(sent_at)), Some(Kind::BoolValue(true))) =
                            (field(&message, "sent_at"), field(&message, "measured"))
                        && sent_at as u64 >= since
                    {
                        let elapsed = now_micros().saturating_sub(sent_at as u64).max(1);
                        let _ = latency.lock().unwrap_or_else(PoisonError::into_inner).record(elapsed);
                        arrivals
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((sent_at as u64, elapsed));
                        received
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(message.message_id.clone());
                    }
                    if to_ack.send(message.message_id.clone()).is_err() {
                        return;
                    }
                    if mode == OnDelivery::Reply {
                        let mut client = client.clone();
                        let sender = message.sender.map(|s| s.agent_id).unwrap_or_default();
                        let mut reply = self::message(&agent, &sender, payload(16, None), false);
                        reply.message_type = pb::MessageType::TaskResponse as i32;
                        reply.in_reply_to = message.message_id;
                        tokio::spawn(async move {
                            let _ = client
                                .send_message(pb::SendMessageRequest { message: Some(reply) })
                                .await;
                        });
                    }
                }
            }));
        }
        Ok(Self {
            acked,
            latency,
            arrivals,
            received,
            tasks,
        })
    }

    /// Waits until `expected` acks arrived (or `timeout`), then stops.
    async fn drain(self, expected: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        while self.acked.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for task in &self.tasks {
            task.abort();
        }
        self.acked.load(Ordering::Relaxed)
    }
}

/// Acknowledges one agent's deliveries as they arrive.
struct Acker {
    client: MessageServiceClient<Authed>,
    agent: String,
    acked: Arc<AtomicU64>,
}

impl Acker {
    /// With `batch` > 1, what arrived while the previous AckMessages call
    /// was in flight goes in the next one; with 1, each delivery gets its own
    /// AckMessage, up to 256 in flight.
    async fn run(self, mut ids: mpsc::UnboundedReceiver<String>, batch: usize) {
        let calls = Arc::new(Semaphore::new(if batch == 1 { 256 } else { 1 }));
        let mut taken = Vec::with_capacity(batch);
        while ids.recv_many(&mut taken, batch).await > 0 {
            let Ok(permit) = calls.clone().acquire_owned().await else {
                return;
            };
            let (mut client, acked, agent) = (self.client.clone(), self.acked.clone(), self.agent.clone());
            let message_ids = std::mem::take(&mut taken);
            tokio::spawn(async move {
                let done = if let [message_id] = &message_ids[..] {
                    let ack = pb::AckMessageRequest {
                        agent_id: agent,
                        message_id: message_id.clone(),
                    };
                    u64::from(client.ack_message(ack).await.is_ok())
                } else {
                    let acks = pb::AckMessagesRequest {
                        agent_id: agent,
                        message_ids,
                    };
                    client.ack_messages(acks).await.map_or(0, |response| {
                        let results = response.into_inner().results;
                        results.iter().filter(|r| r.code == 0).count() as u64
                    })
                };
                acked.fetch_add(done, Ordering::Relaxed);
                drop(permit);
            });
        }
    }
}

pub async fn run(args: &BenchArgs) -> Result<Vec<Report>, String> {
    let bus = Bus::open(args).await?;
    match args.scenario {
        Scenario::Send => Ok(vec![send(args, &bus, false).await?]),
        Scenario::SendSync => Ok(vec![send(args, &bus, true).await?]),
        Scenario::HttpSend => Ok(vec![http_send(args, &bus).await?]),
        Scenario::Publish => publish(args, &bus).await,
        Scenario::E2e => e2e(args, &bus).await,
        Scenario::Sessions => Ok(vec![sessions(args, &bus).await?]),
        Scenario::Watch if args.idle => Ok(vec![watch_idle(args, &bus).await?]),
        Scenario::Watch => Ok(vec![watch(args, &bus).await?]),
        Scenario::EchoServer => Err("echo-server is not a measurement".into()),
    }
}

/// Runs a closed loop and samples the servers' CPU over the measured part.
async fn measure<F, Fut>(bus: &Bus, workers: usize, timing: Timing, make: impl Fn(usize) -> F) -> (Measured, CpuUsed)
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let cpu = bus.cpu_window(timing);
    let measured = driver::closed_loop(workers, timing, make).await;
    let used = cpu.finish().await;
    (measured, used)
}

async fn send(args: &BenchArgs, bus: &Bus, sync: bool) -> Result<Report, String> {
    let sinks = register_sinks(bus, args.agents).await?;
    let mode = if sync { OnDelivery::Reply } else { OnDelivery::Ack };
    let receivers = Receivers::start(bus, &sinks, mode, args.ack_batch).await?;
    let bytes = args.payload;
    let (measured, cpu) = measure(bus, args.workers(), args.timing(), |i| {
        let client = bus.messages(bus.channel(i));
        let sinks = sinks.clone();
        move |seq| {
            let mut client = client.clone();
            let message = message(CLIENT, &sinks[seq as usize % sinks.len()], payload(bytes, None), sync);
            async move {
                let response = client
                    .send_message(pb::SendMessageRequest { message: Some(message) })
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                if sync && response.get_ref().reply.is_none() {
                    return Err("a SYNC send returned no reply".into());
                }
                Ok(())
            }
        }
    })
    .await;
    let name = if sync { "send-sync" } else { "send" };
    let mut report = bus.report(args, name, &measured, Some(&cpu));
    let acked = receivers.drain(0, Duration::ZERO).await;
    report.extra.insert("acked_by_receivers".into(), json!(acked));
    report.extra.insert("ack_batch".into(), json!(args.ack_batch));
    Ok(report)
}

/// One PublishMessages stream per connection, shared by that connection's
/// `--in-flight` workers: each worker puts a message on the stream and
/// waits for its result (results come in request order), so every stream
/// keeps `--in-flight` messages outstanding. Then SendMessages with
/// batches of `--in-flight` messages, one call in flight per connection.
async fn publish(args: &BenchArgs, bus: &Bus) -> Result<Vec<Report>, String> {
    let sinks = register_sinks(bus, args.agents).await?;
    let receivers = Receivers::start(bus, &sinks, OnDelivery::Ack, args.ack_batch).await?;
    let bytes = args.payload;
    let mut streams = Vec::new();
    for i in 0..args.connections.max(1) {
        streams.push(PublishStream::open(bus.messages(bus.channel(i))).await?);
    }
    let (measured, cpu) = measure(bus, args.workers(), args.timing(), |i| {
        let stream = streams[i % streams.len()].clone();
        let sinks = sinks.clone();
        move |seq| {
            let message = message(CLIENT, &sinks[seq as usize % sinks.len()], payload(bytes, None), false);
            let stream = stream.clone();
            async move { stream.publish(message).await }
        }
    })
    .await;
    drop(streams);
    let mut streamed = bus.report(args, "publish", &measured, Some(&cpu));
    streamed.target = format!("{} PublishMessages", bus.label);
    streamed.extra.insert("ack_batch".into(), json!(args.ack_batch));

    let batch = args.in_flight.clamp(1, crate::api::MAX_SENDS);
    let timing = args.timing();
    let (measured, cpu) = measure(bus, args.connections.max(1), timing, |i| {
        let client = bus.messages(bus.channel(i));
        let sinks = sinks.clone();
        move |seq| {
            let mut client = client.clone();
            let messages = (0..batch)
                .map(|k| {
                    let sink = &sinks[(seq as usize * batch + k) % sinks.len()];
                    message(CLIENT, sink, payload(bytes, None), false)
                })
                .collect();
            async move {
                let results = client
                    .send_messages(pb::SendMessagesRequest { messages })
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                    .into_inner()
                    .results;
                match results.iter().find(|r| !r.accepted) {
                    Some(refused) => Err(format!("{}: {}", refused.code_name, refused.error)),
                    None => Ok(()),
                }
            }
        }
    })
    .await;
    // Each operation was a batch: count its messages (latency stays the
    // batch's, which is each of its messages').
    let messages = Measured {
        ops: measured.ops * batch as u64,
        ..measured
    };
    let mut batched = bus.report(args, "publish", &messages, Some(&cpu));
    batched.target = format!("{} SendMessages x{batch}", bus.label);
    let acked = receivers.drain(0, Duration::ZERO).await;
    batched.extra.insert("acked_by_receivers".into(), json!(acked));
    Ok(vec![streamed, batched])
}

/// A PublishMessages stream shared by several workers: requests go out
/// and their waiters queue up under one lock, so the n-th result goes to
/// the n-th waiter.
#[derive(Clone)]
struct PublishStream {
    outgoing: Arc<Mutex<PublishQueue>>,
}

struct PublishQueue {
    requests: mpsc::UnboundedSender<pb::PublishMessagesRequest>,
    waiters: std::collections::VecDeque<tokio::sync::oneshot::Sender<pb::SendResult>>,
}

impl PublishStream {
    async fn open(mut client: MessageServiceClient<Authed>) -> Result<Self, String> {
        let (requests, incoming) = mpsc::unbounded_channel();
        let outgoing = Arc::new(Mutex::new(PublishQueue {
            requests,
            waiters: std::collections::VecDeque::new(),
        }));
        let mut results = client
            .publish_messages(tokio_stream::wrappers::UnboundedReceiverStream::new(incoming))
            .await
            .map_err(|s| format!("cannot open a PublishMessages stream: {}", s.message()))?
            .into_inner();
        // Weak: when the workers are done, the requests' sender goes with
        // the queue, the stream half-closes and the server ends it.
        let queue = Arc::downgrade(&outgoing);
        tokio::spawn(async move {
            while let Ok(Some(response)) = results.message().await {
                let Some(queue) = queue.upgrade() else { return };
                let waiter = queue.lock().unwrap_or_else(PoisonError::into_inner).waiters.pop_front();
                if let (Some(waiter), Some(result)) = (waiter, response.result) {
                    let _ = waiter.send(result);
                }
            }
            // The stream ended: fail whoever still waits.
            if let Some(queue) = queue.upgrade() {
                queue.lock().unwrap_or_else(PoisonError::into_inner).waiters.clear();
            }
        });
        Ok(Self { outgoing })
    }

    async fn publish(&self, message: pb::Message) -> Result<(), String> {
        let (waiter, result) = tokio::sync::oneshot::channel();
        {
            let mut queue = self.outgoing.lock().unwrap_or_else(PoisonError::into_inner);
            let request = pb::PublishMessagesRequest { message: Some(message) };
            queue
                .requests
                .send(request)
                .map_err(|_| "the stream is closed".to_owned())?;
            queue.waiters.push_back(waiter);
        }
        let result = result.await.map_err(|_| "the stream ended".to_owned())?;
        if result.accepted {
            Ok(())
        } else {
            Err(format!("{}: {}", result.code_name, result.error))
        }
    }
}

/// The same closed loop as `send` against the echo peer (no receivers).
pub async fn echo_peer(args: &BenchArgs) -> Result<Report, String> {
    let spawned = Spawned::agentbus(&["bench", "echo-server", "--listen", "127.0.0.1:0"], &[], None)?;
    let probe = CpuProbe {
        pids: vec![spawned.pid()],
        postgres: false,
    };
    let label = "tonic echo (transport ceiling)".to_owned();
    let mut bus = Bus::connect(args, vec![spawned.addr.clone()], Layout::single(), probe, label).await?;
    bus._peer = Some(spawned);
    let bytes = args.payload;
    let (measured, cpu) = measure(&bus, args.workers(), args.timing(), |i| {
        let client = bus.messages(bus.channel(i));
        move |_| {
            let mut client = client.clone();
            let message = message(CLIENT, "bench://sink-0", payload(bytes, None), false);
            async move {
                client
                    .send_message(pb::SendMessageRequest { message: Some(message) })
                    .await
                    .map(drop)
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
        }
    })
    .await;
    Ok(bus.report(args, "send", &measured, Some(&cpu)))
}

async fn http_send(args: &BenchArgs, bus: &Bus) -> Result<Report, String> {
    let sinks = register_sinks(bus, args.agents).await?;
    let receivers = Receivers::start(bus, &sinks, OnDelivery::Ack, args.ack_batch).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.workers())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let data = "x".repeat(args.payload.saturating_sub(11));
    let bodies: Arc<Vec<String>> = Arc::new(
        sinks
            .iter()
            .map(|sink| {
                json!({
                    "sender": {"agent_id": CLIENT},
                    "recipient": {"agent_id": sink},
                    "message_type": "task_request",
                    "payload": {"data": data},
                })
                .to_string()
            })
            .collect(),
    );
    let key = bus.api_key.clone();
    let (measured, cpu) = measure(bus, args.workers(), args.timing(), |i| {
        let url = format!("{}/messages/send", bus.sender_url(i));
        let (client, bodies, key) = (client.clone(), bodies.clone(), key.clone());
        move |seq| {
            let mut request = client
                .post(&url)
                .header("content-type", "application/json")
                .body(bodies[seq as usize % bodies.len()].clone());
            if let Some(key) = &key {
                request = request.header("x-agent-api-key", key);
            }
            async move {
                let response = request.send().await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
                }
            }
        }
    })
    .await;
    let mut report = bus.report(args, "http-send", &measured, Some(&cpu));
    report.connections = args.workers();
    report.in_flight = 1;
    let acked = receivers.drain(0, Duration::ZERO).await;
    report.extra.insert("acked_by_receivers".into(), json!(acked));
    report.extra.insert("ack_batch".into(), json!(args.ack_batch));
    Ok(report)
}

/// Open loop at each `--rate`; latency from the send to the arrival on the
/// recipient's stream, and every measured message must arrive.
async fn e2e(args: &BenchArgs, bus: &Bus) -> Result<Vec<Report>, String> {
    let rates = if args.rate.is_empty() {
        vec![5000.0]
    } else {
        args.rate.clone()
    };
    if args.pause.is_some() && bus.probe.pids.is_empty() {
        return Err("--pause needs the server's PID: use --spawn or --server-pid".into());
    }
    let sinks = register_sinks(bus, args.agents).await?;
    let mut reports = Vec::new();
    let mut sustained: Option<f64> = None;
    for rate in rates {
        let receivers = Receivers::start(bus, &sinks, OnDelivery::Time, args.ack_batch).await?;
        let sent_measured = Arc::new(AtomicU64::new(0));
        let timing = args.timing();
        let cpu = bus.cpu_window(timing);
        let measure_from = Instant::now() + timing.warmup;
        let clients: Vec<_> = (0..args.connections.max(1))
            .map(|i| bus.messages(bus.channel(i)))
            .collect();
        let bytes = args.payload;
        // --pause: halfway through the measured window.
        let paused = args.pause.map(|length| {
            let (pids, at) = (bus.probe.pids.clone(), measure_from + timing.duration / 2);
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                pause::stop_and_continue(pids, length).await
            })
        });
        let measured = driver::open_loop(rate, 4096, timing, |seq| {
            let mut client = clients[seq as usize % clients.len()].clone();
            let in_window = Instant::now() >= measure_from;
            let stamp = Some((now_micros(), in_window));
            let message = message(CLIENT, &sinks[seq as usize % sinks.len()], payload(bytes, stamp), false);
            let sent_measured = sent_measured.clone();
            async move {
                client
                    .send_message(pb::SendMessageRequest { message: Some(message) })
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                if in_window {
                    sent_measured.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        })
        .await;
        let used = cpu.finish().await;
        let resumed = match paused {
            Some(task) => Some(task.await.map_err(|e| format!("the pause task failed: {e}"))??),
            None => None,
        };
        let sent = sent_measured.load(Ordering::Relaxed);
        // Wait for every measured message to arrive: a message later than
        // the p99 budget (and 10 s) counts as lost.
        let deadline = Instant::now() + Duration::from_secs(10).max(args.max_p99);
        while receivers.received.lock().unwrap_or_else(PoisonError::into_inner).len() < sent as usize
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let received = receivers.received.lock().unwrap_or_else(PoisonError::into_inner).len() as u64;
        let arrival = receivers.latency.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let receivers_arrivals = receivers.arrivals.clone();
        receivers.drain(0, Duration::ZERO).await;
        let mut report = bus.report(args, "e2e", &measured.arrivals(arrival, received), Some(&used));
        let send_p99 = measured.latency.value_at_quantile(0.99) as f64 / 1000.0;
        let lost = sent.saturating_sub(received);
        report.extra.insert("offered_per_s".into(), json!(rate));
        report.extra.insert("sent".into(), json!(sent));
        report.extra.insert("lost".into(), json!(lost));
        report.extra.insert("agents".into(), json!(sinks.len()));
        report.extra.insert("send_call_p99_ms".into(), json!(send_p99));
        if let (Some(length), Some(resumed)) = (args.pause, resumed) {
            let mut arrivals = std::mem::take(&mut *receivers_arrivals.lock().unwrap_or_else(PoisonError::into_inner));
            let recovery = pause::recovery(&mut arrivals, resumed);
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            report.extra.insert("pause_ms".into(), json!(ms(length)));
            report
                .extra
                .insert("after_pause_p99_ms".into(), json!(recovery.after_p99.map(ms)));
            report
                .extra
                .insert("after_pause_messages".into(), json!(recovery.after_count));
            let recovered = recovery.recovered_in.map_or(json!("not recovered"), |d| json!(ms(d)));
            report.extra.insert("recovery_ms".into(), recovered);
        }
        let ok = lost == 0 && measured.errors == 0 && report.latency_ms.p99 <= args.max_p99.as_secs_f64() * 1000.0;
        if ok {
            sustained = Some(sustained.map_or(rate, |s: f64| s.max(rate)));
        }
        reports.push(report);
    }
    if let Some(last) = reports.last_mut() {
        last.extra
            .insert("highest_rate_meeting_max_p99".into(), json!(sustained));
    }
    Ok(reports)
}

async fn sessions(args: &BenchArgs, bus: &Bus) -> Result<Report, String> {
    let orchestrator = "bench://orchestrator".to_owned();
    let data = "x".repeat(args.payload.saturating_sub(11));
    let (measured, cpu) = measure(bus, args.workers(), args.timing(), |i| {
        let client = bus.sessions(bus.channel(i));
        let (orchestrator, data) = (orchestrator.clone(), data.clone());
        move |seq| {
            let mut client = client.clone();
            let orchestrator = orchestrator.clone();
            let mut fields = serde_json::Map::new();
            fields.insert("step".into(), json!(seq));
            fields.insert("data".into(), json!(data));
            let context = crate::api::convert::json_object(&fields);
            async move {
                let created = client
                    .create_session(pb::CreateSessionRequest {
                        orchestrator,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| format!("create: {:?}: {}", s.code(), s.message()))?;
                let id = created.into_inner().session.map(|s| s.session_id).unwrap_or_default();
                client
                    .update_shared_context(pb::UpdateSharedContextRequest {
                        session_id: id.clone(),
                        context: Some(context),
                        mode: pb::ContextUpdateMode::Merge as i32,
                        expected_version: None,
                    })
                    .await
                    .map_err(|s| format!("context: {:?}: {}", s.code(), s.message()))?;
                client
                    .complete_session(pb::CompleteSessionRequest {
                        session_id: id,
                        summary: "done".into(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| format!("complete: {:?}: {}", s.code(), s.message()))?;
                Ok(())
            }
        }
    })
    .await;
    let mut report = bus.report(args, "sessions", &measured, Some(&cpu));
    report.extra.insert("rpcs_per_op".into(), json!(3));
    report.extra.insert("rpcs_per_s".into(), json!(report.throughput * 3.0));
    Ok(report)
}

/// Subscribers count the events of sessions created at `--rate` in the
/// measured window; each must see every one.
async fn watch(args: &BenchArgs, bus: &Bus) -> Result<Report, String> {
    let rate = args.rate.first().copied().unwrap_or(250.0);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let tag = format!("w{}", &run[run.len() - 8..]);
    let received = Arc::new(AtomicU64::new(0));
    // One histogram per subscriber (uncontended), merged at the end.
    let mut latencies = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..args.subscribers {
        let mut client = bus.sessions(bus.stream_channel(i));
        let mut stream = client
            .watch_sessions(pb::WatchSessionsRequest::default())
            .await
            .map_err(|s| format!("cannot watch: {}", s.message()))?
            .into_inner();
        let latency = Arc::new(Mutex::new(histogram()));
        latencies.push(latency.clone());
        let (received, measured_suffix) = (received.clone(), format!("{tag}-m"));
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(item)) = stream.message().await {
                if let Some(pb::watch_sessions_response::Kind::Event(event)) = item.kind
                    && event.session_id.ends_with(&measured_suffix)
                {
                    received.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = event.timestamp {
                        let at = u64::try_from(t.seconds).unwrap_or(0) * 1_000_000
                            + u64::try_from(t.nanos / 1000).unwrap_or(0);
                        let elapsed = now_micros().saturating_sub(at).max(1);
                        let _ = latency.lock().unwrap_or_else(PoisonError::into_inner).record(elapsed);
                    }
                }
            }
        }));
    }
    let timing = args.timing();
    let measure_from = Instant::now() + timing.warmup;
    let created = Arc::new(AtomicU64::new(0));
    let client = bus.sessions(bus.control());
    let cpu = bus.cpu_window(timing);
    let measured = driver::open_loop(rate, 1024, timing, |seq| {
        let mut client = client.clone();
        let in_window = Instant::now() >= measure_from;
        let suffix = if in_window { "m" } else { "w" };
        let request = pb::CreateSessionRequest {
            session_id: format!("{seq}-{tag}-{suffix}"),
            orchestrator: "bench://orchestrator".into(),
            ..Default::default()
        };
        let created = created.clone();
        async move {
            client
                .create_session(request)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            if in_window {
                created.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await;
    let used = cpu.finish().await;
    let expected = created.load(Ordering::Relaxed) * args.subscribers as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    let delivered = received.load(Ordering::Relaxed);
    let mut arrival = histogram();
    for latency in latencies {
        let _ = arrival.add(&*latency.lock().unwrap_or_else(PoisonError::into_inner));
    }
    let mut report = bus.report(args, "watch", &measured.arrivals(arrival, delivered), Some(&used));
    report.extra.insert("subscribers".into(), json!(args.subscribers));
    report.extra.insert("events_per_s".into(), json!(rate));
    report.extra.insert("expected_deliveries".into(), json!(expected));
    report
        .extra
        .insert("lost".into(), json!(expected.saturating_sub(delivered)));
    Ok(report)
}

/// Opens `--subscribers` idle watchers and reports the server's resident
/// memory per subscriber.
async fn watch_idle(args: &BenchArgs, bus: &Bus) -> Result<Report, String> {
    let pids = &bus.probe.pids;
    if pids.is_empty() {
        return Err("--idle needs the server's PID: use --spawn or --server-pid".into());
    }
    let memory = || -> Result<u64, String> {
        let each: Option<Vec<u64>> = pids.iter().map(|&pid| process::rss_bytes(pid)).collect();
        Ok(each.ok_or("cannot read the server's memory")?.iter().sum())
    };
    // Subscriber i watches on node i % N. HTTP/2 allows 1024 streams per
    // connection; open enough connections to each node.
    let nodes = bus.urls.len();
    let mut channels = Vec::new();
    for (node, url) in bus.urls.iter().enumerate() {
        let on_node = (node..args.subscribers).step_by(nodes).count();
        let mut own = Vec::new();
        for _ in 0..on_node.div_ceil(1000).max(1) {
            own.push(open_channel(url).await?);
        }
        channels.push(own);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = memory()?;
    let started = Instant::now();
    let mut streams = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let own = &channels[i % nodes];
        let mut client = bus.sessions(own[(i / nodes) % own.len()].clone());
        let stream = client
            .watch_sessions(pb::WatchSessionsRequest::default())
            .await
            .map_err(|s| format!("subscriber {i}: {}", s.message()))?
            .into_inner();
        streams.push(stream);
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = memory()?;
    let per = after.saturating_sub(before) as f64 / args.subscribers.max(1) as f64;
    let measured = Measured {
        latency: histogram(),
        ops: args.subscribers as u64,
        errors: 0,
        first_errors: Vec::new(),
        elapsed: opened_in,
    };
    let mut report = bus.report(args, "watch-idle", &measured, None);
    report.extra.insert("subscribers".into(), json!(args.subscribers));
    report.extra.insert("server_rss_before_bytes".into(), json!(before));
    report.extra.insert("server_rss_after_bytes".into(), json!(after));
    report
        .extra
        .insert("server_bytes_per_subscriber".into(), json!(per.round()));
    drop(streams);
    Ok(report)
}
