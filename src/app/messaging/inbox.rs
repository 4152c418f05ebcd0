//! Inbox streams: claiming deliveries for a stream, taking the messages
//! sends hand straight to a waiting stream (where the store claims on
//! send), and giving back what a closed stream was delivered but never
//! acknowledged.

use super::*;

impl Messaging {
    /// Claims the next deliverable messages for `agent`, up to `most`, in
    /// delivery order; empty when nothing is deliverable.
    async fn claim(&self, agent: &AgentId, guard: &StreamGuard, most: usize) -> Result<Claimed> {
        let mut batch = most;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.tick();
            let inbox = self.store.inbox(agent, now, batch).await?;
            let (candidates, later) = (inbox.records, inbox.later);
            let drained = candidates.len() < batch;
            if candidates.is_empty() {
                return Ok(Claimed {
                    records: Vec::new(),
                    drained,
                    later,
                });
            }
            let mut writes = Vec::with_capacity(candidates.len());
            for record in candidates {
                if record.expires_at <= now {
                    // Past its routing timeout: never deliver it.
                    self.dead_letter(record, DeadLetter::Timeout).await?;
                    continue;
                }
                let claimed = self.claimed(&record, now);
                writes.push(swap(&record, claimed));
            }
            if writes.is_empty() {
                continue;
            }
            let claimed: Vec<MessageRecord> = writes.iter().map(|w| w.record.clone()).collect();
            // Noted before the write: if the stream goes away while it
            // commits, the guard still releases the deliveries.
            claimed.iter().for_each(|record| guard.claimed(record));
            // A claim need not be durable: after a crash the message is
            // simply queued again.
            match self.store.lease(writes).await {
                Ok(_) => {
                    claimed
                        .iter()
                        .for_each(|record| self.metrics.delivered(record.attempts));
                    return Ok(Claimed {
                        records: claimed,
                        drained,
                        later,
                    });
                }
                Err(e) => {
                    claimed.iter().for_each(|record| guard.forget(record.id()));
                    match e {
                        // Another stream of the agent took one: claim one at
                        // a time from now on.
                        StoreError::Conflict { .. } => batch = 1,
                        e => return Err(e.into()),
                    }
                }
            }
        }
        // Lost every race: look again shortly.
        Ok(Claimed {
            records: Vec::new(),
            drained: false,
            later: Some(Timestamp::now()),
        })
    }

    /// `record` delivered at `now`, awaiting its ack.
    pub(super) fn claimed(&self, record: &MessageRecord, now: Timestamp) -> MessageRecord {
        let mut claimed = record.clone();
        claimed.state = MessageState::Delivered;
        claimed.attempts += 1;
        claimed.total_attempts += 1;
        claimed.last_delivered_at = Some(now);
        claimed.available_at = now.saturating_add(self.config.ack_timeout);
        claimed
    }

    /// One of this node's inbox streams of `agent` that wait with nothing
    /// to deliver, to take a message straight from a send, if any has room
    /// (in turn when there are several).
    pub(super) fn waiting_stream(&self, agent: &AgentId) -> Option<Handover> {
        let mut waiting = self.waiting();
        let streams = waiting.get_mut(agent)?;
        let index = streams.iter().position(|(_, handover)| handover.has_room())?;
        let stream = streams.remove(index);
        let handover = stream.1.clone();
        streams.push(stream);
        Some(handover)
    }

    /// Hands a message stored claimed over to the stream it was claimed
    /// for; if that stream has just closed, puts the message back in the
    /// inbox.
    pub(super) async fn hand_over(&self, stream: Handover, record: MessageRecord, from: HandedFrom) {
        stream.held.fetch_add(1, Ordering::AcqRel);
        match stream.to.send(record) {
            Ok(()) => self.metrics.handed(from),
            Err(returned) => {
                let record = returned.0;
                Box::pin(self.release(vec![(record.id().clone(), record.version)])).await;
            }
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Vec<(u64, Handover)>>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An agent's inbox: queued messages first, then live ones, with
    /// heartbeats while idle. Ends with UNAVAILABLE at shutdown. With
    /// `max_in_flight`, at most that many deliveries await their ack.
    pub async fn receive(
        self: &Arc<Self>,
        agent: AgentId,
        max_in_flight: Option<usize>,
        shutdown: CancellationToken,
    ) -> Result<InboxStream> {
        if !self.is_registered(&agent).await? {
            return Err(Error::not_found(format!(
                "agent {agent} is not registered; register it before opening its inbox"
            )));
        }
        let messaging = self.clone();
        Ok(Box::pin(async_stream::stream! {
            let guard = StreamGuard::open(messaging.clone(), agent.clone());
            // Dropped before the guard: what it still holds is released.
            let mut handovers = Handovers::open(messaging.clone(), agent.clone());
            let heartbeat = messaging.config.heartbeat;
            let mut idle = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
            idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (waker, acks) = messaging.presence.wakers(&agent);
            // Registration was checked when the stream opened; after a
            // wake-up (unregistering wakes the agent) it is checked again
            // once a claim finds nothing: unregistering dead-letters the
            // inbox and new messages are refused, so an unregistered
            // agent's claims soon find nothing. Not before every claim: on
            // a shared database that is a query per delivery.
            let mut check_registration = false;
            loop {
                let woken = waker.notified();
                let acked = acks.notified();
                tokio::pin!(woken, acked);
                woken.as_mut().enable();
                if max_in_flight.is_some() {
                    acked.as_mut().enable();
                }
                let room = match max_in_flight {
                    None => CLAIM_BATCH,
                    Some(limit) => match guard.outstanding(&messaging.store).await {
                        Ok(outstanding) => limit.saturating_sub(outstanding).min(CLAIM_BATCH),
                        Err(e) => {
                            yield Err(e.into());
                            return;
                        }
                    },
                };
                let claims = if room == 0 {
                    Ok(Claimed {
                        records: Vec::new(),
                        drained: false,
                        later: guard.earliest_deadline(),
                    })
                } else {
                    messaging.claim(&agent, &guard, room).await
                };
                // Whatever was handed over meanwhile goes out with what the
                // read claimed, in delivery order. With nothing deliverable
                // left and no prefetch limit, the stream takes new messages
                // from this node's sends directly (where the store claims on
                // send) until a read leaves some behind.
                let claims = claims.map(|mut claimed| {
                    guard.take_handed(&mut handovers, &mut claimed.records, None);
                    claimed
                });
                match &claims {
                    Ok(claimed) if claimed.drained && max_in_flight.is_none() && messaging.store.claims_on_send() => {
                        handovers.wait()
                    }
                    _ => handovers.stop_waiting(),
                }
                let later = match claims {
                    Ok(claimed) if !claimed.records.is_empty() => {
                        idle.reset();
                        for record in claimed.records {
                            yield Ok(delivery(record));
                        }
                        // Drained: what arrives from now on wakes `woken`
                        // (enabled before the read), so the stream can wait
                        // without reading the inbox once more.
                        if !claimed.drained {
                            continue;
                        }
                        claimed.later
                    }
                    Ok(claimed) => {
                        if check_registration {
                            match messaging.is_registered(&agent).await {
                                Ok(true) => check_registration = false,
                                Ok(false) => {
                                    yield Err(Error::not_found(format!("agent {agent} was unregistered")));
                                    return;
                                }
                                Err(e) => {
                                    yield Err(e);
                                    return;
                                }
                            }
                        }
                        claimed.later
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                };
                // Sleep until something is due, arrives, or the heartbeat;
                // at the prefetch limit, until an ack wakes us or one of our
                // deliveries reaches its ack deadline.
                let until_next = later
                    .map(|at| at.unix_micros() - Timestamp::now().unix_micros())
                    .map(|micros| Duration::from_micros(u64::try_from(micros).unwrap_or(0)))
                    .unwrap_or(heartbeat)
                    .clamp(MIN_IDLE_WAIT, heartbeat);
                let wake_at = tokio::time::Instant::now() + until_next;
                let wake = loop {
                    // `woken` first: a message queued since the read (while
                    // the stream was not waiting, or held `MAX_HANDED`) may be
                    // older than one handed over, and goes out with it in
                    // order after the next read.
                    let wake = tokio::select! {
                        biased;
                        () = shutdown.cancelled() => Wake::Shutdown,
                        () = &mut woken => Wake::Work,
                        Some(record) = handovers.received.recv() => Wake::Handed(Box::new(record)),
                        () = &mut acked, if max_in_flight.is_some() => Wake::Acked,
                        () = tokio::time::sleep_until(wake_at) => Wake::Work,
                        _ = idle.tick() => Wake::Idle,
                    };
                    let Wake::Handed(record) = wake else { break wake };
                    idle.reset();
                    let mut records = Vec::new();
                    guard.take_handed(&mut handovers, &mut records, Some(*record));
                    for record in records {
                        yield Ok(delivery(record));
                    }
                };
                match wake {
                    Wake::Shutdown => {
                        yield Err(Error::unavailable("the server is shutting down; reconnect to continue"));
                        return;
                    }
                    Wake::Work => check_registration = true,
                    Wake::Acked | Wake::Handed(_) => {}
                    Wake::Idle => {
                        check_registration = true;
                        guard.prune();
                        let inbox_depth = match messaging.store.inbox_depth(&agent).await {
                            Ok(depth) => depth,
                            Err(e) => {
                                yield Err(e.into());
                                return;
                            }
                        };
                        messaging.presence.touch(&agent);
                        yield Ok(InboxItem::Heartbeat { timestamp: Timestamp::now(), inbox_depth });
                    }
                }
            }
        }))
    }

    /// Puts deliveries that a closed stream never got acknowledged back in
    /// the inbox at once, so another stream of the agent receives them.
    async fn release(&self, claims: Vec<(MessageId, u64)>) {
        for (id, version) in claims {
            match self.store.get_message(&id).await {
                Ok(Some(record)) if record.version == version && record.state == MessageState::Delivered => {
                    if let Err(error) = self.unacked(record, false).await {
                        tracing::warn!(%error, message_id = %id, "releasing a delivery failed; the sweeper retries it");
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, message_id = %id, "releasing a delivery failed"),
            }
        }
    }
}

/// What one claim took.
struct Claimed {
    records: Vec<MessageRecord>,
    /// The inbox read found fewer than it asked for: nothing more was
    /// deliverable when it was read, and whatever arrives since wakes the
    /// stream.
    drained: bool,
    /// When the next message that was not deliverable yet will be (at the
    /// prefetch limit: the earliest ack deadline of the stream's
    /// deliveries).
    later: Option<Timestamp>,
}

enum Wake {
    Shutdown,
    Work,
    /// An ack made room under the prefetch limit.
    Acked,
    Idle,
    /// A send stored a message claimed for this stream.
    Handed(Box<MessageRecord>),
}

fn delivery(record: MessageRecord) -> InboxItem {
    InboxItem::Delivery {
        attempt: record.attempts,
        ack_deadline: record.available_at,
        message: record.message,
    }
}

/// Hand-overs a waiting stream holds, not yet delivered, at most (give or
/// take the sends under way): past that (a client slow to read), sends
/// queue in the inbox, where order is by priority.
const MAX_HANDED: usize = 64;

/// Where a send hands a message it stored claimed for a waiting stream.
#[derive(Clone)]
pub(super) struct Handover {
    stream: u64,
    to: mpsc::UnboundedSender<MessageRecord>,
    /// Messages handed over that the stream has not taken yet.
    held: Arc<AtomicUsize>,
}

impl Handover {
    fn has_room(&self) -> bool {
        self.held.load(Ordering::Acquire) < MAX_HANDED
    }
}

/// A stream's end of the hand-overs: listed among the agent's waiting
/// streams while it waits (see [`Messaging::waiting_stream`]).
struct Handovers {
    messaging: Arc<Messaging>,
    agent: AgentId,
    handover: Handover,
    received: mpsc::UnboundedReceiver<MessageRecord>,
    waiting: bool,
}

impl Handovers {
    fn open(messaging: Arc<Messaging>, agent: AgentId) -> Self {
        let (to, received) = mpsc::unbounded_channel();
        let handover = Handover {
            stream: messaging.streams.fetch_add(1, Ordering::Relaxed),
            to,
            held: Arc::default(),
        };
        Self {
            messaging,
            agent,
            handover,
            received,
            waiting: false,
        }
    }

    fn wait(&mut self) {
        self.waiting = true;
        self.messaging
            .waiting()
            .entry(self.agent.clone())
            .or_default()
            .push((self.handover.stream, self.handover.clone()));
    }

    fn stop_waiting(&mut self) {
        if !std::mem::take(&mut self.waiting) {
            return;
        }
        let mut waiting = self.messaging.waiting();
        if let Some(streams) = waiting.get_mut(&self.agent) {
            streams.retain(|(stream, _)| *stream != self.handover.stream);
            if streams.is_empty() {
                waiting.remove(&self.agent);
            }
        }
    }
}

impl Drop for Handovers {
    fn drop(&mut self) {
        self.stop_waiting();
        // Sends that hand over from now on put their message back
        // themselves; what was handed over but not delivered goes back too.
        self.received.close();
        let mut claims = Vec::new();
        while let Ok(record) = self.received.try_recv() {
            claims.push((record.id().clone(), record.version));
        }
        release_soon(&self.messaging, claims);
    }
}

/// Marks the agent online while its stream lives and remembers what the
/// stream delivered, to release it when the stream closes.
struct StreamGuard {
    messaging: Arc<Messaging>,
    agent: AgentId,
    claims: Mutex<HashMap<MessageId, (u64, Timestamp)>>,
}

impl StreamGuard {
    fn open(messaging: Arc<Messaging>, agent: AgentId) -> Self {
        messaging.presence.connect(&agent);
        Self {
            messaging,
            agent,
            claims: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, (u64, Timestamp)>> {
        self.claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn claimed(&self, record: &MessageRecord) {
        self.lock()
            .insert(record.id().clone(), (record.version, record.available_at));
        self.messaging.delivered().insert(record.id().clone(), record.clone());
    }

    /// Adds the deliveries sends handed over (see [`Handovers`]), `first`
    /// and those still to receive, to `records`, in delivery order.
    fn take_handed(&self, handovers: &mut Handovers, records: &mut Vec<MessageRecord>, first: Option<MessageRecord>) {
        let before = records.len();
        records.extend(first);
        while let Ok(record) = handovers.received.try_recv() {
            records.push(record);
        }
        let handed = records.len() - before;
        if handed == 0 {
            return;
        }
        handovers.handover.held.fetch_sub(handed, Ordering::AcqRel);
        for record in &records[before..] {
            self.claimed(record);
            self.messaging.metrics.delivered(record.attempts);
        }
        records.sort_by_key(|record| (std::cmp::Reverse(record.message.priority), record.accepted_at));
    }

    fn forget(&self, id: &MessageId) {
        self.lock().remove(id);
        self.messaging.delivered().remove(id);
    }

    /// How many deliveries of this stream still await their ack; forgets
    /// the rest (acked, released, redelivered, or past their ack deadline,
    /// which the sweeper owns).
    async fn outstanding(&self, store: &Arc<dyn Store>) -> std::result::Result<usize, StoreError> {
        self.prune();
        let claims: Vec<(MessageId, u64)> = self
            .lock()
            .iter()
            .map(|(id, (version, _))| (id.clone(), *version))
            .collect();
        let mut outstanding = 0;
        for (id, version) in claims {
            match store.get_message(&id).await? {
                Some(record) if record.version == version && record.state == MessageState::Delivered => {
                    outstanding += 1
                }
                _ => self.forget(&id),
            }
        }
        Ok(outstanding)
    }

    fn earliest_deadline(&self) -> Option<Timestamp> {
        self.lock().values().map(|(_, deadline)| *deadline).min()
    }

    /// Forgets claims whose ack deadline passed: the sweeper owns them now.
    fn prune(&self) {
        let now = Timestamp::now();
        let mut delivered = self.messaging.delivered();
        self.lock().retain(|id, (_, deadline)| {
            let keep = *deadline > now;
            if !keep {
                delivered.remove(id);
            }
            keep
        });
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.messaging.presence.disconnect(&self.agent);
        let claims: Vec<(MessageId, u64)> = self.lock().drain().map(|(id, (version, _))| (id, version)).collect();
        let mut delivered = self.messaging.delivered();
        claims.iter().for_each(|(id, _)| drop(delivered.remove(id)));
        drop(delivered);
        release_soon(&self.messaging, claims);
    }
}

/// Releases `claims` (see [`Messaging::release`]) from a `drop`, which
/// cannot wait: the release runs on its own.
fn release_soon(messaging: &Arc<Messaging>, claims: Vec<(MessageId, u64)>) {
    if claims.is_empty() {
        return;
    }
    let messaging = messaging.clone();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { messaging.release(claims).await });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{messaging, request};
    use super::*;

    /// Stores a message of `priority` and answers its record, claimed.
    async fn claimed(messaging: &Arc<Messaging>, id: &str, priority: Priority) -> MessageRecord {
        let mut new = request(id, 0);
        new.priority = priority;
        messaging.send(new, None).await.unwrap();
        let record = messaging
            .get(&MessageId::parse_field("message_id", id).unwrap())
            .await
            .unwrap();
        messaging.claimed(&record, Timestamp::now())
    }

    fn ids(records: &[MessageRecord]) -> Vec<&str> {
        records.iter().map(|record| record.id().as_str()).collect()
    }

    #[tokio::test]
    async fn handed_over_messages_go_out_with_a_reads_claims_in_delivery_order() {
        let (_, _, messaging) = messaging().await;
        let agent = AgentId::parse("opencode://backend").unwrap();
        let guard = StreamGuard::open(messaging.clone(), agent.clone());
        let mut handovers = Handovers::open(messaging.clone(), agent.clone());
        let first = claimed(&messaging, "m1", Priority::Medium).await;
        let urgent = claimed(&messaging, "m2", Priority::High).await;
        let third = claimed(&messaging, "m3", Priority::Medium).await;
        let last = claimed(&messaging, "m4", Priority::Low).await;

        assert!(messaging.waiting_stream(&agent).is_none(), "not waiting yet");
        handovers.wait();
        for record in [third, urgent] {
            let stream = messaging.waiting_stream(&agent).expect("a waiting stream");
            messaging.hand_over(stream, record, HandedFrom::Send).await;
        }
        // What a read claimed, and what was handed over meanwhile.
        let mut records = vec![first, last];
        guard.take_handed(&mut handovers, &mut records, None);
        assert_eq!(
            ids(&records),
            ["m2", "m1", "m3", "m4"],
            "priority first, then acceptance"
        );
        assert_eq!(handovers.handover.held.load(Ordering::Acquire), 0, "all taken");
        let mut noted: Vec<_> = guard.lock().keys().map(|id| id.as_str().to_owned()).collect();
        noted.sort();
        assert_eq!(noted, ["m2", "m3"], "the handed over, for release");

        // A stream holding as many as it may take is passed over.
        handovers.handover.held.store(MAX_HANDED, Ordering::Release);
        assert!(messaging.waiting_stream(&agent).is_none(), "full");
        handovers.handover.held.store(0, Ordering::Release);
        handovers.stop_waiting();
        assert!(messaging.waiting_stream(&agent).is_none(), "no longer waiting");
        assert!(messaging.waiting().is_empty(), "nothing left behind for the agent");
    }
}
