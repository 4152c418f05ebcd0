//! Message use cases: send (with idempotency, session checks, tasks and
//! sync replies), acks and lookups here; inbox streams in [`inbox`], the
//! sweeper that redelivers, falls back and dead-letters in [`sweep`], other
//! nodes' changes in [`signals`].
//!
//! Every state change is a compare-and-swap on the message record in the
//! store, so several streams, the sweeper and acks never lose updates.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use super::metrics::{HandedFrom, Metrics};
use super::presence::Presence;
use crate::domain::access::Actor;
use crate::domain::aggregate::TaskResult;
use crate::domain::message::{
    AgentRef, BUS_AGENT, DeliveryMode, Message, MessageId, MessageRecord, MessageState, MessageType, Priority, Routing,
    SharedMessage, json_fingerprint,
};
use crate::domain::session::{Session, SessionEventKind, SessionLimits, Task, TaskState};
use crate::domain::trace::TraceContext;
use crate::domain::{AgentId, Denial, Error, ErrorKind, JsonObject, Result, Timestamp};
use crate::store::{MessageWrite, Record, SessionChange, Store, StoreError, WriteSet};

mod inbox;
mod signals;
mod sweep;

use sweep::DeadLetter;

/// Most ids in one AckMessages call.
pub const MAX_ACKS: usize = 1000;
/// Most messages in one SendMessages call.
pub const MAX_SENDS: usize = 1000;
/// Retries of a write that lost a race with another writer.
const MAX_ATTEMPTS: usize = 32;
/// Due messages handled per sweep query.
const SWEEP_BATCH: usize = 256;
/// Deliveries claimed for a stream in one write.
const CLAIM_BATCH: usize = 16;
/// Shortest wait of an idle inbox stream, so a race never makes it spin.
const MIN_IDLE_WAIT: Duration = Duration::from_millis(5);
/// Sweep queries per sweep, at most.
const SWEEP_ROUNDS: usize = 16;
/// Replies read when looking for the one that answers a request.
const REPLY_SCAN: usize = 16;

#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// A delivery not acknowledged within this is delivered again.
    pub ack_timeout: Duration,
    /// Routing timeout of messages that do not set one.
    pub message_timeout: Duration,
    /// Unit of the retry backoff.
    pub retry_base: Duration,
    /// Open messages per recipient before SendMessage is RESOURCE_EXHAUSTED.
    pub inbox_limit: u64,
    pub heartbeat: Duration,
    /// Task bookkeeping must keep sessions within these.
    pub session_limits: SessionLimits,
}

/// A SendMessage request after field validation; the server fills in what
/// the client left out.
#[derive(Debug, Clone, Serialize)]
pub struct NewMessage {
    pub message_id: Option<MessageId>,
    pub timestamp: Option<Timestamp>,
    pub sender: AgentRef,
    pub recipient: AgentRef,
    pub message_type: MessageType,
    pub priority: Priority,
    pub payload: Value,
    pub routing: Routing,
    pub metadata: JsonObject,
    pub in_reply_to: Option<MessageId>,
    pub task_id: Option<String>,
    /// Not part of what makes a resend the same message: a retry may come
    /// from another span.
    #[serde(skip)]
    pub trace: Option<TraceContext>,
}

#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub message_id: MessageId,
    pub state: MessageState,
    /// SYNC only: the reply.
    pub reply: Option<Message>,
}

#[derive(Debug, Clone)]
pub enum InboxItem {
    Delivery {
        message: SharedMessage,
        attempt: u32,
        ack_deadline: Timestamp,
    },
    Heartbeat {
        timestamp: Timestamp,
        inbox_depth: u64,
    },
}

pub type InboxStream = Pin<Box<dyn Stream<Item = Result<InboxItem>> + Send>>;

pub struct Messaging {
    store: Arc<dyn Store>,
    presence: Arc<Presence>,
    metrics: Arc<Metrics>,
    config: MessagingConfig,
    replies: Mutex<HashMap<MessageId, Vec<oneshot::Sender<Message>>>>,
    /// Last `accepted_at` handed out, so FIFO order follows accept order.
    clock: AtomicI64,
    /// Deliveries this node's inbox streams hold, as claimed: an ack of
    /// one starts from it rather than reading the message again (a read
    /// per message on a shared database). Entries live while the stream's
    /// claim does. A stale one (the sweeper took the delivery back) only
    /// loses the ack's compare-and-swap, after which the ack reads the
    /// stored message.
    delivered: Mutex<HashMap<MessageId, MessageRecord>>,
    /// This node's inbox streams that wait with nothing to deliver, by
    /// agent, with their stream number (see [`Messaging::waiting_stream`]).
    waiting: Mutex<HashMap<AgentId, Vec<(u64, inbox::Handover)>>>,
    /// Numbers this node's inbox streams.
    streams: AtomicU64,
}

impl Messaging {
    pub fn new(store: Arc<dyn Store>, presence: Arc<Presence>, metrics: Arc<Metrics>, config: MessagingConfig) -> Self {
        Self {
            store,
            presence,
            metrics,
            config,
            replies: Mutex::new(HashMap::new()),
            clock: AtomicI64::new(0),
            delivered: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            streams: AtomicU64::new(0),
        }
    }

    fn delivered(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, MessageRecord>> {
        self.delivered.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The delivery of `id` to `agent` as this node's stream claimed it,
    /// if one did and it may still be open.
    fn delivered_to(&self, agent: &AgentId, id: &MessageId) -> Option<MessageRecord> {
        self.delivered()
            .get(id)
            .filter(|record| &record.recipient == agent && record.state == MessageState::Delivered)
            .cloned()
    }

    /// A timestamp later than every one handed out before.
    fn tick(&self) -> Timestamp {
        let now = Timestamp::now().unix_micros();
        let mut last = self.clock.load(Ordering::Acquire);
        loop {
            let next = now.max(last + 1);
            match self
                .clock
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Timestamp::from_unix_micros(next),
                Err(actual) => last = actual,
            }
        }
    }

    async fn is_registered(&self, agent: &AgentId) -> Result<bool> {
        Ok(self.store.is_registered(agent).await?)
    }

    pub async fn get(&self, id: &MessageId) -> Result<MessageRecord> {
        self.store.get_message(id).await?.ok_or_else(|| missing(id))
    }

    /// Accepts a message. With SYNC delivery waits for the reply, at most
    /// until the routing timeout or `deadline`, whichever comes first.
    pub async fn send(self: &Arc<Self>, new: NewMessage, deadline: Option<Instant>) -> Result<SendOutcome> {
        // Only a client-chosen id can be resent. The fingerprint covers the
        // id, so a send naming a server-chosen one never matched its first
        // send's (no id) anyway: those store 0, and skip hashing the payload.
        let client_id = new.message_id.is_some();
        let print = if client_id {
            json_fingerprint(&new).map_err(|e| Error::internal(e.to_string()))?
        } else {
            0
        };
        let message = Message {
            message_id: new.message_id.unwrap_or_else(MessageId::generate),
            timestamp: new.timestamp.unwrap_or_else(Timestamp::now),
            sender: new.sender,
            recipient: new.recipient,
            message_type: new.message_type,
            priority: new.priority,
            payload: new.payload,
            routing: new.routing,
            metadata: new.metadata,
            in_reply_to: new.in_reply_to,
            task_id: new.task_id,
            trace: new.trace,
        };
        message.validate().map_err(|e| e.within("message"))?;
        let sync = message.routing.delivery_mode == DeliveryMode::Sync;
        let reply_wait = if sync {
            Some(self.await_reply(&message.message_id))
        } else {
            None
        };
        let record = match self.accept(message, print, client_id).await {
            Ok(record) => record,
            Err(Accepted::Duplicate(record)) => *record,
            Err(Accepted::Failed(error)) => return Err(error),
        };
        let Some(reply_wait) = reply_wait else {
            return Ok(SendOutcome {
                message_id: record.id().clone(),
                state: record.state,
                reply: None,
            });
        };
        self.wait_for_reply(record, reply_wait, deadline).await
    }

    /// Accepts one message of a batch (SendMessages, PublishMessages) as
    /// [`Messaging::send`] does, concurrently with the others, so that their
    /// writes share the store's commits; each is still its own write set.
    /// SYNC delivery is refused: a batch answers when its messages are
    /// stored, and would otherwise wait for replies one by one.
    pub async fn send_batched(self: &Arc<Self>, new: NewMessage) -> Result<SendOutcome> {
        if new.routing.delivery_mode == DeliveryMode::Sync {
            return Err(Error::invalid(
                "message.routing.delivery_mode",
                "SYNC is not available in SendMessages or PublishMessages (their results do not wait \
                 for replies): send this message with SendMessage, or make it ASYNC",
            ));
        }
        self.send(new, None).await
    }

    /// Stores a new message atomically with its task and answer bookkeeping.
    async fn accept(
        &self,
        message: Message,
        print: u64,
        resend_possible: bool,
    ) -> std::result::Result<MessageRecord, Accepted> {
        // Boxed, as are the rarer steps inside it: every future that awaits
        // this one would otherwise carry its 5-10 KB, copied on each move
        // (memcpy was 4.5 % of a send's instructions).
        match Box::pin(self.insert(&message, print)).await {
            // A resend is answered from the first send, whatever changed
            // since: a check that failed (the recipient is gone, the session
            // ended) may have failed because of that. Only a client-chosen id
            // can be a resend. The store checks the id before its own
            // refusals (a full inbox, a recipient unregistered meanwhile), so
            // a resend that reaches it meets its first send's id; but
            // `insert` resolves the recipient and checks the session before
            // the store sees the id, and looking the id up first would cost
            // every send a read to spare a failed one.
            Err(Accepted::Failed(error)) if resend_possible => {
                match self.store.get_message(&message.message_id).await {
                    Ok(Some(_)) => Err(self.duplicate(&message, print).await),
                    _ => Err(Accepted::Failed(error)),
                }
            }
            accepted => accepted,
        }
    }

    async fn insert(&self, message: &Message, print: u64) -> std::result::Result<MessageRecord, Accepted> {
        for attempt in 0..MAX_ATTEMPTS {
            // The first attempt addresses the recipient without looking it
            // up: the store refuses it if it is not registered (a read less
            // per send where reads cost a round trip), and only then are the
            // fallback agents resolved.
            let target = match attempt {
                0 => (message.recipient.agent_id.clone(), 0),
                _ => self.resolve_recipient(message).await?,
            };
            let session = self.check_session(message).await?;
            let now = self.tick();
            let timeout = message.routing.timeout.unwrap_or(self.config.message_timeout);
            let queued = MessageRecord::queued(message.clone(), target, now, timeout, print);
            // Where claims are writes of their own (`Store::claims_on_send`),
            // a stream of this node whose inbox was drained takes the
            // message as it is stored, claimed: no inbox read and no claim
            // to write. The stream delivers it in order with anything it
            // reads meanwhile (see `inbox`).
            let handover = match self.store.claims_on_send() {
                true => self.waiting_stream(&queued.recipient),
                false => None,
            };
            let record = match handover {
                Some(_) => self.claimed(&queued, now),
                None => queued,
            };
            let insert = MessageWrite {
                record: record.clone(),
                expected: None,
                inbox_limit: Some(self.config.inbox_limit),
                require_recipient: true,
            };
            let mut set = WriteSet {
                session: None,
                messages: vec![insert],
            };
            let answers = self.answered(message).await?;
            let is_reply = answers.is_some();
            set.messages.extend(answers);
            if let Some(session) = session {
                set.session = Box::pin(self.task_change(session, message, now)).await?;
            }
            match self.store.write(set).await {
                Ok(_) => {
                    self.metrics.sent(message.message_type);
                    match handover {
                        Some(stream) => self.hand_over(stream, record.clone(), HandedFrom::Send).await,
                        None => self.presence.wake(&record.recipient),
                    }
                    self.presence.touch(&message.sender.agent_id);
                    if let (true, Some(original)) = (is_reply, &message.in_reply_to) {
                        self.fulfil_reply(original, message);
                    }
                    return Ok(record);
                }
                Err(StoreError::AlreadyExists(Record::Message(id))) if id == message.message_id => {
                    return Err(self.duplicate(message, print).await);
                }
                // The recipient was unregistered meanwhile: resolve again.
                Err(StoreError::NotFound(Record::Agent(_))) => continue,
                // The session or the answered message changed meanwhile.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(Accepted::Failed(e.into())),
            }
        }
        Err(Accepted::Failed(Error::aborted(
            "the session is changing too fast; retry",
        )))
    }

    /// The first result of an identical earlier send, or ALREADY_EXISTS.
    async fn duplicate(&self, message: &Message, print: u64) -> Accepted {
        match self.store.get_message(&message.message_id).await {
            Ok(Some(existing))
                if existing.message.sender.agent_id == message.sender.agent_id && existing.fingerprint == print =>
            {
                Accepted::Duplicate(Box::new(existing))
            }
            Ok(_) => Accepted::Failed(Error::already_exists(format!(
                "message id {} was already used for a different message",
                message.message_id
            ))),
            Err(e) => Accepted::Failed(e.into()),
        }
    }

    /// The recipient, or the first registered fallback agent, and the index
    /// of the next fallback to try.
    async fn resolve_recipient(&self, message: &Message) -> Result<(AgentId, usize)> {
        let recipient = &message.recipient.agent_id;
        if self.is_registered(recipient).await? {
            return Ok((recipient.clone(), 0));
        }
        for (i, fallback) in message.routing.fallback_agents.iter().enumerate() {
            if self.is_registered(fallback).await? {
                return Ok((fallback.clone(), i + 1));
            }
        }
        Err(Error::not_found(format!("agent {recipient} is not registered")))
    }

    /// With `sender.session_id`: the session must be active and both ends
    /// present in it.
    async fn check_session(&self, message: &Message) -> Result<Option<Session>> {
        let Some(id) = &message.sender.session_id else {
            return Ok(None);
        };
        // A session the sender takes no part in does not exist for it.
        let sender = &message.sender.agent_id;
        let missing = || {
            Error::failed_precondition(format!("session {id} does not exist or {sender} takes no part in it"))
                .because(Denial::NotParticipant)
        };
        let session = self.store.get_session(id).await?.ok_or_else(missing)?;
        if !session.involves(sender) {
            return Err(missing());
        }
        if !session.is_active() {
            return Err(Error::failed_precondition(format!(
                "session {id} is {}",
                session.state.as_str()
            )));
        }
        for (role, agent) in [
            ("sender", &message.sender.agent_id),
            ("recipient", &message.recipient.agent_id),
        ] {
            if !session.is_present(agent) {
                return Err(Error::failed_precondition(format!(
                    "{role} {agent} is not an active participant of session {id}"
                )));
            }
        }
        Ok(Some(session))
    }

    /// The session change a message makes to its tasks, if any.
    async fn task_change(
        &self,
        mut session: Session,
        message: &Message,
        now: Timestamp,
    ) -> Result<Option<SessionChange>> {
        let expected = session.version;
        let (kind, task_id) = if message.message_type == MessageType::TaskRequest {
            let task_id = message.task_key().unwrap_or_else(|| message.message_id.to_string());
            let task = Task {
                task_id: task_id.clone(),
                assignee: message.recipient.agent_id.clone(),
                delegated_by: message.sender.agent_id.clone(),
                request_id: message.message_id.to_string(),
                state: TaskState::Delegated,
                created_at: now,
                updated_at: now,
                last_payload: None,
                result: None,
                step: session.workflow.current_step.clone(),
                updates: 0,
            };
            session.delegate_task(task, now)?;
            (SessionEventKind::TaskDelegated, task_id)
        } else {
            let (state, result) = match message.message_type {
                MessageType::StatusUpdate => (TaskState::Working, None),
                MessageType::TaskResponse => (TaskState::Completed, Some(TaskResult::from_payload(&message.payload)?)),
                MessageType::Error => (TaskState::Failed, Some(TaskResult::failure(&message.payload))),
                _ => return Ok(None),
            };
            let Some(task_id) = self.task_of_reply(&session, message).await? else {
                return Ok(None);
            };
            // Only the agent the task went to reports on it; the message
            // still goes through, it just does not move the task.
            if !self.works_on(&session, &task_id, &message.sender.agent_id).await? {
                return Ok(None);
            }
            if !session.update_task(
                &task_id,
                state,
                message.payload.clone(),
                result,
                message.message_id.as_str(),
                now,
            ) {
                return Ok(None);
            }
            (SessionEventKind::TaskUpdated, task_id)
        };
        session.check_size(&self.config.session_limits)?;
        Ok(Some(SessionChange {
            session,
            expected_version: Some(expected),
            kind,
            agent_id: Some(message.sender.agent_id.clone()),
            task_id: Some(task_id),
            timestamp: now,
        }))
    }

    /// Whether `agent` is the task's assignee, or the fallback agent its
    /// request was rerouted to.
    async fn works_on(&self, session: &Session, task_id: &str, agent: &AgentId) -> Result<bool> {
        let Some(task) = session.task(task_id) else {
            return Ok(false);
        };
        if &task.assignee == agent {
            return Ok(true);
        }
        let Ok(request) = MessageId::parse_field("request_id", &task.request_id) else {
            return Ok(false);
        };
        Ok(self
            .store
            .get_message(&request)
            .await?
            .is_some_and(|r| &r.recipient == agent))
    }

    /// The task a reply belongs to: its `task_id`, or the task of the
    /// request it answers.
    async fn task_of_reply(&self, session: &Session, message: &Message) -> Result<Option<String>> {
        if let Some(task_id) = &message.task_id {
            return Ok(session.task(task_id).map(|t| t.task_id.clone()));
        }
        let Some(original) = &message.in_reply_to else {
            return Ok(None);
        };
        Ok(session
            .tasks
            .iter()
            .find(|t| t.request_id == original.as_str())
            .map(|t| t.task_id.clone()))
    }

    /// Marks the message this one answers as ANSWERED, when it is a reply
    /// to the original sender.
    async fn answered(&self, message: &Message) -> Result<Option<MessageWrite>> {
        let Some(original) = &message.in_reply_to else {
            return Ok(None);
        };
        let Some(record) = self.store.get_message(original).await? else {
            return Ok(None);
        };
        let answerable = matches!(
            record.state,
            MessageState::Queued | MessageState::Delivered | MessageState::Acked | MessageState::Expired
        );
        if !answerable || !is_reply(&record, message) {
            return Ok(None);
        }
        let mut answered = record.closed(MessageState::Answered, message.timestamp);
        answered.acked_at.get_or_insert(message.timestamp);
        Ok(Some(swap(&record, answered)))
    }

    fn await_reply(&self, id: &MessageId) -> ReplyWait<'_> {
        let (sender, receiver) = oneshot::channel();
        self.lock_replies().entry(id.clone()).or_default().push(sender);
        ReplyWait {
            messaging: self,
            id: id.clone(),
            receiver: Some(receiver),
        }
    }

    fn lock_replies(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, Vec<oneshot::Sender<Message>>>> {
        self.replies.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fulfil_reply(&self, original: &MessageId, reply: &Message) {
        if let Some(waiters) = self.lock_replies().remove(original) {
            for waiter in waiters {
                let _ = waiter.send(reply.clone());
            }
        }
    }

    async fn wait_for_reply(
        self: &Arc<Self>,
        record: MessageRecord,
        mut wait: ReplyWait<'_>,
        deadline: Option<Instant>,
    ) -> Result<SendOutcome> {
        let id = record.id().clone();
        // `settle`: ack the reply, handed over in this response. Not when the
        // caller may already have given up: then it stays in the inbox.
        let answered = |reply: Message, settle: bool| {
            if settle {
                self.settle_sync_reply(&reply);
            }
            SendOutcome {
                message_id: id.clone(),
                state: MessageState::Answered,
                reply: Some(reply),
            }
        };
        // A reply may already be stored (a resend of an answered request).
        if let Some(reply) = self.stored_reply(&record).await? {
            return Ok(answered(reply, true));
        }
        let left = u64::try_from(record.expires_at.unix_micros() - Timestamp::now().unix_micros()).unwrap_or(0);
        let expires = Instant::now() + Duration::from_micros(left);
        // `deadline` already ends a margin before the caller gives up.
        let until = deadline.map_or(expires, |d| d.min(expires));
        let Some(receiver) = wait.receiver.take() else {
            return Err(Error::internal("reply already awaited"));
        };
        if let Ok(Ok(reply)) = tokio::time::timeout_at(until, receiver).await {
            return Ok(answered(reply, true));
        }
        // A reply may have landed just as the wait ended.
        if let Some(reply) = self.stored_reply(&record).await? {
            return Ok(answered(reply, false));
        }
        // Expire on its own task: the caller's deadline may cancel this one.
        let messaging = self.clone();
        let expiring = id.clone();
        tokio::spawn(async move {
            if let Err(error) = messaging.expire_sync(&expiring).await {
                tracing::warn!(%error, message_id = %expiring, "expiring a SYNC request failed");
            }
        });
        Err(Error::new(
            ErrorKind::DeadlineExceeded,
            format!("no reply to message {id} before the deadline"),
        ))
    }

    /// The first stored reply to `record`, if one arrived.
    async fn stored_reply(&self, record: &MessageRecord) -> Result<Option<Message>> {
        let replies = self.store.replies(record.id(), REPLY_SCAN).await?;
        Ok(replies
            .into_iter()
            .find(|reply| is_reply(record, &reply.message))
            .map(|reply| Message::clone(&reply.message)))
    }

    /// A SYNC request whose reply window closed: EXPIRED, its task timed out.
    async fn expire_sync(&self, id: &MessageId) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            let record = self.get(id).await?;
            if !matches!(
                record.state,
                MessageState::Queued | MessageState::Delivered | MessageState::Acked
            ) {
                return Ok(());
            }
            let now = self.tick();
            let session = self
                .task_outcome(&record, TaskState::TimedOut, json!({"error": "no reply in time"}), now)
                .await?;
            let mut expired = record.closed(MessageState::Expired, now);
            expired.reason = "no reply before the SYNC deadline".into();
            let set = WriteSet {
                session,
                messages: vec![swap(&record, expired)],
            };
            match self.store.write(set).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The session change that moves the task of a request, if it has one.
    async fn task_outcome(
        &self,
        record: &MessageRecord,
        state: TaskState,
        payload: Value,
        now: Timestamp,
    ) -> Result<Option<SessionChange>> {
        let message = &record.message;
        let (Some(session_id), MessageType::TaskRequest) = (&message.sender.session_id, message.message_type) else {
            return Ok(None);
        };
        let Some(mut session) = self.store.get_session(session_id).await? else {
            return Ok(None);
        };
        let task_id = message.task_key().unwrap_or_default();
        let expected = session.version;
        let failure = Some(TaskResult::failure(&payload));
        if !session.update_task(&task_id, state, payload, failure, record.id().as_str(), now) {
            return Ok(None);
        }
        Ok(Some(SessionChange {
            session,
            expected_version: Some(expected),
            kind: SessionEventKind::TaskUpdated,
            agent_id: Some(record.recipient.clone()),
            task_id: Some(task_id),
            timestamp: now,
        }))
    }

    /// A reply handed to its SYNC caller in the SendMessage response has
    /// been delivered: ack it, so it does not also wait in the caller's
    /// inbox (and dead-letter there if the caller never opens one).
    fn settle_sync_reply(self: &Arc<Self>, reply: &Message) {
        let (messaging, agent, id) = (self.clone(), reply.recipient.agent_id.clone(), reply.message_id.clone());
        tokio::spawn(async move {
            if let Err(error) = messaging.ack(&Actor::Admin, &agent, &id).await {
                tracing::debug!(%error, message_id = %id, "a SYNC reply stays in the inbox");
            }
        });
    }

    /// Acknowledges a message addressed to `agent`. A queued one may be
    /// acked too: a SYNC reply handed over in a response, or a delivery
    /// whose claim a restart forgot (claims are leases) and that the agent
    /// had received before it.
    /// Acknowledges a message addressed to `agent`. For an agent `actor`,
    /// a message addressed to another is NOT_FOUND, as if it did not exist.
    pub async fn ack(&self, actor: &Actor, agent: &AgentId, id: &MessageId) -> Result<MessageState> {
        let mut claimed = self.delivered_to(agent, id);
        for _ in 0..MAX_ATTEMPTS {
            let record = match claimed.take() {
                Some(record) => record,
                None => self.get(id).await?,
            };
            let now = self.tick();
            let Some(write) = ack_write(actor, agent, &record, now)? else {
                return Ok(record.state);
            };
            match self.store.write(write.into()).await {
                Ok(_) => {
                    self.acked(agent, &record, now);
                    return Ok(MessageState::Acked);
                }
                Err(StoreError::Conflict { .. }) => {
                    self.delivered().remove(id);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::aborted(format!("message {id} is changing too fast; retry")))
    }

    /// Acknowledges several messages addressed to `agent` in one commit;
    /// one result per id, in order, each as [`Messaging::ack`] would answer.
    pub async fn ack_many(&self, actor: &Actor, agent: &AgentId, ids: &[MessageId]) -> Vec<Result<MessageState>> {
        let now = self.tick();
        // `None`: answered by the write below.
        let mut results: Vec<Option<Result<MessageState>>> = Vec::with_capacity(ids.len());
        let mut writes = Vec::new();
        let mut records = Vec::new();
        // Each id is written once; a repeat shares the write's result.
        let mut writing: HashSet<&MessageId> = HashSet::new();
        // This node's deliveries as claimed, and one read for the rest.
        let mut stored: HashMap<MessageId, MessageRecord> = ids
            .iter()
            .filter_map(|id| self.delivered_to(agent, id))
            .map(|record| (record.id().clone(), record))
            .collect();
        let unknown: Vec<MessageId> = ids.iter().filter(|id| !stored.contains_key(*id)).cloned().collect();
        if !unknown.is_empty() {
            match self.store.get_messages(&unknown).await {
                Ok(found) => stored.extend(found.into_iter().map(|record| (record.id().clone(), record))),
                Err(e) => return ids.iter().map(|_| Err(e.clone().into())).collect(),
            }
        }
        for id in ids {
            if writing.contains(id) {
                results.push(None);
                continue;
            }
            let step = match stored.get(id) {
                Some(record) => ack_write(actor, agent, record, now).map(|write| (write, record.clone())),
                None => Err(missing(id)),
            };
            results.push(match step {
                Ok((Some(write), record)) => {
                    writing.insert(id);
                    writes.push(write);
                    records.push(record);
                    None
                }
                Ok((None, record)) => Some(Ok(record.state)),
                Err(e) => Some(Err(e)),
            });
        }
        let outcome = if writes.is_empty() {
            Ok(None)
        } else {
            let set = WriteSet {
                session: None,
                messages: writes,
            };
            self.store.write(set).await
        };
        match &outcome {
            Ok(_) => records.iter().for_each(|record| self.acked(agent, record, now)),
            // Each is tried again below from what is stored.
            Err(StoreError::Conflict { .. }) => {
                let mut delivered = self.delivered();
                records.iter().for_each(|record| drop(delivered.remove(record.id())));
            }
            Err(_) => {}
        }
        let mut answered = Vec::with_capacity(ids.len());
        for (id, result) in ids.iter().zip(results) {
            answered.push(match (result, &outcome) {
                (Some(result), _) => result,
                (None, Ok(_)) => Ok(MessageState::Acked),
                // One of them changed meanwhile (redelivered, expired): each
                // on its own finds out which.
                (None, Err(StoreError::Conflict { .. })) => self.ack(actor, agent, id).await,
                (None, Err(e)) => Err(e.clone().into()),
            });
        }
        answered
    }

    fn acked(&self, agent: &AgentId, record: &MessageRecord, now: Timestamp) {
        self.delivered().remove(record.id());
        let latency = now.unix_micros().saturating_sub(record.accepted_at.unix_micros());
        let latency = Duration::from_micros(u64::try_from(latency).unwrap_or(0));
        self.metrics.acked(record.message.message_type, latency);
        self.presence.touch(agent);
        // A stream at its prefetch limit has room again.
        self.presence.acked(agent);
    }
}

fn missing(id: &MessageId) -> Error {
    Error::not_found(format!("message {id} not found"))
}

/// The write that acknowledges `record`; `None` if it already is.
fn ack_write(actor: &Actor, agent: &AgentId, record: &MessageRecord, now: Timestamp) -> Result<Option<MessageWrite>> {
    let id = record.id();
    if &record.recipient != agent && actor.agent().is_some() {
        return Err(Error::not_found(format!("message {id} not found")).because(Denial::NotParticipant));
    }
    if &record.recipient != agent {
        return Err(Error::failed_precondition(format!(
            "message {id} is addressed to {}, not {agent}",
            record.recipient
        )));
    }
    match record.state {
        MessageState::Acked | MessageState::Answered => Ok(None),
        MessageState::DeadLettered | MessageState::Expired => Err(Error::failed_precondition(format!(
            "message {id} is {}: {}",
            state_name(record.state),
            record.reason
        ))),
        MessageState::Queued | MessageState::Delivered => {
            let mut acked = record.closed(MessageState::Acked, now);
            acked.acked_at = Some(now);
            Ok(Some(swap(record, acked)))
        }
    }
}

/// Whether `reply` answers `original`: it goes back to the original sender
/// from the recipient (or a fallback agent), and is not a bus notice.
fn is_reply(original: &MessageRecord, reply: &Message) -> bool {
    let from = &reply.sender.agent_id;
    let routed_to = from == &original.message.recipient.agent_id
        || from == &original.recipient
        || original.message.routing.fallback_agents.contains(from);
    reply.recipient.agent_id == original.message.sender.agent_id && routed_to && from.as_str() != BUS_AGENT
}

/// A compare-and-swap of `current` to `next`, which becomes the next version.
fn swap(current: &MessageRecord, mut next: MessageRecord) -> MessageWrite {
    next.version = current.version + 1;
    MessageWrite {
        record: next,
        expected: Some(current.version),
        inbox_limit: None,
        require_recipient: false,
    }
}

fn state_name(state: MessageState) -> &'static str {
    match state {
        MessageState::Queued => "queued",
        MessageState::Delivered => "delivered",
        MessageState::Acked => "acked",
        MessageState::Answered => "answered",
        MessageState::DeadLettered => "dead-lettered",
        MessageState::Expired => "expired",
    }
}

/// How `accept` ended when it did not store a new message.
enum Accepted {
    /// An identical earlier send: its record.
    Duplicate(Box<MessageRecord>),
    Failed(Error),
}

impl From<Error> for Accepted {
    fn from(error: Error) -> Self {
        Accepted::Failed(error)
    }
}

/// A registered wait for the reply to a SYNC message; unregisters on drop.
struct ReplyWait<'a> {
    messaging: &'a Messaging,
    id: MessageId,
    receiver: Option<oneshot::Receiver<Message>>,
}

impl Drop for ReplyWait<'_> {
    fn drop(&mut self) {
        // Closes our sender's channel, so the retain below sees it.
        drop(self.receiver.take());
        let mut replies = self.messaging.lock_replies();
        if let Some(waiters) = replies.get_mut(&self.id) {
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                replies.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;
    use crate::domain::agent::{Agent, AgentDescriptor};
    use crate::store::memory::MemoryStore;

    fn agent(id: &str) -> Agent {
        Agent::registered(AgentDescriptor::new(AgentId::parse(id).unwrap()), Timestamp::now())
    }

    pub(super) fn request(id: &str, max_retries: u32) -> NewMessage {
        let end = |id: &str| AgentRef::new(AgentId::parse(id).unwrap(), "", None).unwrap();
        NewMessage {
            message_id: Some(MessageId::parse_field("message_id", id).unwrap()),
            timestamp: None,
            sender: end("claude-code://orchestrator"),
            recipient: end("opencode://backend"),
            message_type: MessageType::TaskRequest,
            priority: Priority::Medium,
            payload: json!({"n": 1}),
            routing: Routing {
                retry_policy: crate::domain::message::RetryPolicy {
                    max_retries,
                    backoff: crate::domain::message::Backoff::Linear,
                },
                ..Routing::default()
            },
            metadata: JsonObject::new(),
            in_reply_to: None,
            task_id: None,
            trace: None,
        }
    }

    pub(super) async fn messaging() -> (Arc<dyn Store>, Arc<Metrics>, Arc<Messaging>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(16));
        for id in ["claude-code://orchestrator", "opencode://backend"] {
            store.put_agent(agent(id), None).await.unwrap();
        }
        let metrics = Arc::new(Metrics::default());
        let config = MessagingConfig {
            ack_timeout: Duration::from_millis(30),
            message_timeout: Duration::from_secs(60),
            retry_base: Duration::from_millis(10),
            inbox_limit: 100,
            heartbeat: Duration::from_secs(60),
            session_limits: SessionLimits::default(),
        };
        let messaging = Arc::new(Messaging::new(
            store.clone(),
            Arc::new(Presence::default()),
            metrics.clone(),
            config,
        ));
        (store, metrics, messaging)
    }

    /// An ack starts from the delivery as this node's stream claimed it;
    /// when the sweeper changed the message since, the ack answers from
    /// what is stored, not from that copy.
    #[tokio::test]
    async fn an_ack_of_a_stale_claim_answers_from_the_stored_message() {
        let (store, _, messaging) = messaging().await;
        let backend = AgentId::parse("opencode://backend").unwrap();
        let mut inbox = messaging
            .receive(backend.clone(), None, CancellationToken::new())
            .await
            .unwrap();
        for id in ["one", "two"] {
            messaging.send(request(id, 0), None).await.unwrap();
            let Some(Ok(InboxItem::Delivery { .. })) = inbox.next().await else {
                panic!("no delivery")
            };
        }
        let ids = [
            MessageId::parse_field("message_id", "one").unwrap(),
            MessageId::parse_field("message_id", "two").unwrap(),
        ];
        assert!(messaging.delivered_to(&backend, &ids[0]).is_some());
        // Past the ack deadline with no retries left: dead-lettered.
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(messaging.sweep().await.unwrap(), 2);
        let dead = |result: Result<MessageState>| {
            let error = result.unwrap_err();
            assert_eq!(error.kind, ErrorKind::FailedPrecondition, "{error:?}");
            assert!(error.message.contains("dead-lettered"), "{error:?}");
        };
        dead(messaging.ack(&Actor::Admin, &backend, &ids[0]).await);
        for result in messaging.ack_many(&Actor::Admin, &backend, &ids).await {
            dead(result);
        }
        for id in &ids {
            assert_eq!(
                store.get_message(id).await.unwrap().unwrap().state,
                MessageState::DeadLettered
            );
            assert!(messaging.delivered_to(&backend, id).is_none());
        }
    }

    #[tokio::test]
    async fn counters_follow_the_message_flow() {
        let (store, metrics, messaging) = messaging().await;
        let backend = AgentId::parse("opencode://backend").unwrap();
        let mut inbox = messaging
            .receive(backend.clone(), None, CancellationToken::new())
            .await
            .unwrap();

        messaging.send(request("acked", 0), None).await.unwrap();
        let Some(Ok(InboxItem::Delivery { message, .. })) = inbox.next().await else {
            panic!("no delivery")
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        messaging
            .ack(&Actor::Admin, &backend, &message.message_id)
            .await
            .unwrap();

        messaging.send(request("dropped", 0), None).await.unwrap();
        let Some(Ok(InboxItem::Delivery { .. })) = inbox.next().await else {
            panic!("no delivery")
        };
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(messaging.sweep().await.unwrap(), 1);

        // A SYNC send that fails leaves no reply waiter behind.
        let mut unknown = request("nowhere", 0);
        unknown.recipient = AgentRef::new(AgentId::parse("codex://ghost").unwrap(), "", None).unwrap();
        unknown.routing.delivery_mode = DeliveryMode::Sync;
        assert_eq!(
            messaging.send(unknown, None).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert!(messaging.lock_replies().is_empty());

        let (snapshot, counts) = metrics.collect(store.as_ref(), Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            snapshot.sent,
            [2, 0, 0, 1, 0],
            "two requests and one dead-letter notice"
        );
        assert_eq!(snapshot.total_sent(), 3);
        assert_eq!(
            (
                snapshot.delivered,
                snapshot.redelivered,
                snapshot.acked,
                snapshot.dead_lettered
            ),
            (2, 0, 1, 1)
        );
        assert!(snapshot.ack_latency_sum >= Duration::from_millis(2), "{snapshot:?}");
        assert_eq!(
            counts,
            crate::store::StoreCounts {
                active_sessions: 0,
                registered_agents: 2,
                size_bytes: None
            }
        );
    }
}
