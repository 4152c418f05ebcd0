//! The sweeper: redelivery after the ack timeout, fallback agents, and
//! dead letters with their ERROR notices.

use super::*;

impl Messaging {
    /// Whether this node runs the background work now (one node of
    /// several sharing a store does).
    pub fn runs_background_work(&self) -> bool {
        self.store.runs_background_work()
    }

    /// Handles every message whose ack deadline or routing timeout passed;
    /// returns how many it handled.
    pub async fn sweep(&self) -> Result<usize> {
        let mut handled = 0;
        for _ in 0..SWEEP_ROUNDS {
            let now = self.tick();
            let due = self.store.due_messages(now, SWEEP_BATCH).await?;
            for record in &due {
                if record.expires_at <= now {
                    self.dead_letter(record.clone(), DeadLetter::Timeout).await?;
                } else {
                    self.unacked(record.clone(), true).await?;
                }
            }
            handled += due.len();
            if due.len() < SWEEP_BATCH {
                break;
            }
        }
        Ok(handled)
    }

    /// A delivery that was not acknowledged: retry (after the backoff when
    /// `backoff`), else the next registered fallback agent, else dead-letter.
    pub(super) async fn unacked(&self, record: MessageRecord, backoff: bool) -> Result<()> {
        let now = self.tick();
        let policy = &record.message.routing.retry_policy;
        let mut next = record.clone();
        next.state = MessageState::Queued;
        if record.attempts <= policy.max_retries {
            next.available_at = if backoff {
                now.saturating_add(policy.delay(record.attempts, self.config.retry_base))
            } else {
                now
            };
        } else {
            let fallbacks = &record.message.routing.fallback_agents;
            let mut chosen = None;
            for (i, agent) in fallbacks.iter().enumerate().skip(record.next_fallback) {
                if self.is_registered(agent).await? {
                    chosen = Some((i, agent.clone()));
                    break;
                }
            }
            let Some((i, agent)) = chosen else {
                self.dead_letter(record, DeadLetter::Exhausted).await?;
                return Ok(());
            };
            next.recipient = agent;
            next.next_fallback = i + 1;
            next.attempts = 0;
            next.available_at = now;
        }
        let recipient = next.recipient.clone();
        let mut write = swap(&record, next);
        // A fallback must still be registered when the hand-over commits.
        write.require_recipient = write.record.recipient != record.recipient;
        match self.store.write(write.into()).await {
            Ok(_) => {
                self.presence.wake(&recipient);
                Ok(())
            }
            // Acked or handled by someone else meanwhile, or the fallback
            // was unregistered: the next sweep looks at it again.
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Dead-letters the message and tells its sender with an ERROR message;
    /// false when the record changed meanwhile (acked, released, or
    /// already dead-lettered), so the caller can count each message once.
    pub(super) async fn dead_letter(&self, record: MessageRecord, why: DeadLetter) -> Result<bool> {
        let now = self.tick();
        let reason = match why {
            DeadLetter::Timeout => format!(
                "routing timeout of {:.3}s passed before an ack",
                (record.expires_at.unix_micros() - record.accepted_at.unix_micros()) as f64 / 1e6
            ),
            DeadLetter::Exhausted => format!(
                "no ack after {} deliveries to {} and no registered fallback agent left",
                record.total_attempts, record.recipient
            ),
            DeadLetter::Unregistered => format!("recipient {} was unregistered", record.recipient),
        };
        let task_state = if matches!(why, DeadLetter::Timeout) {
            TaskState::TimedOut
        } else {
            TaskState::Failed
        };
        let mut dead = record.closed(MessageState::DeadLettered, now);
        dead.reason = reason.clone();
        let mut set = WriteSet {
            session: self
                .task_outcome(&record, task_state, json!({"error": reason}), now)
                .await?,
            messages: vec![swap(&record, dead)],
        };
        let notice = self.notice(&record, &reason, now);
        if let Some(notice) = &notice {
            // The sender gets it even if it is not registered (any more).
            let write = MessageWrite {
                record: notice.clone(),
                expected: None,
                inbox_limit: None,
                require_recipient: false,
            };
            set.messages.push(write);
        }
        match self.store.write(set).await {
            Ok(_) => {
                self.metrics.dead_lettered();
                if let Some(notice) = notice {
                    self.metrics.sent(MessageType::Error);
                    self.presence.wake(&notice.recipient);
                }
                tracing::info!(message_id = %record.id(), %reason, "message dead-lettered");
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The ERROR message that tells a sender its message was dead-lettered;
    /// none for the bus's own notices.
    fn notice(&self, record: &MessageRecord, reason: &str, now: Timestamp) -> Option<MessageRecord> {
        let sender = &record.message.sender;
        if sender.agent_id.as_str() == BUS_AGENT {
            return None;
        }
        let bus = AgentId::parse(BUS_AGENT).ok()?;
        let message = Message {
            message_id: MessageId::generate(),
            timestamp: now,
            sender: AgentRef {
                framework: bus.framework().to_owned(),
                agent_id: bus,
                session_id: None,
            },
            recipient: AgentRef {
                session_id: None,
                ..sender.clone()
            },
            message_type: MessageType::Error,
            priority: Priority::High,
            payload: json!({
                "error": "dead_lettered",
                "reason": reason,
                "message_id": record.id().as_str(),
                "recipient": record.message.recipient.agent_id.as_str(),
                "last_recipient": record.recipient.as_str(),
                "attempts": record.total_attempts,
            }),
            routing: Routing::default(),
            metadata: JsonObject::new(),
            in_reply_to: Some(record.id().clone()),
            task_id: record.message.task_id.clone(),
            // Part of the dead message's trace.
            trace: record.message.trace.clone(),
        };
        let recipient = (sender.agent_id.clone(), 0);
        Some(MessageRecord::queued(
            message,
            recipient,
            now,
            self.config.message_timeout,
            0,
        ))
    }

    /// Dead-letters every open message to `agent` (it was unregistered).
    pub async fn dead_letter_inbox(&self, agent: &AgentId) -> Result<u32> {
        let mut count = 0;
        loop {
            let open = self.store.open_messages(agent, SWEEP_BATCH).await?;
            if open.is_empty() {
                return Ok(count);
            }
            for record in open {
                // A conflict (the closing stream released it, say) leaves
                // it open for the next round; count each message once.
                if self.dead_letter(record, DeadLetter::Unregistered).await? {
                    count += 1;
                }
            }
        }
    }
}

/// Why a message is dead-lettered.
#[derive(Debug, Clone)]
pub(super) enum DeadLetter {
    Timeout,
    Exhausted,
    Unregistered,
}
