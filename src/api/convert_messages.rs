//! Conversions for agents and messages; errors name the request field.

use crate::app::agents::AgentView;
use crate::app::messaging::NewMessage;
use crate::domain::agent::{AgentDescriptor, AgentMetadata, Capabilities, Endpoints, PerformanceProfile};
use crate::domain::message::{
    AgentRef, Backoff, DeliveryMode, Message, MessageId, MessageRecord, MessageState, MessageType, Priority,
    RetryPolicy, Routing,
};
use crate::domain::trace::TraceContext;
use crate::domain::{AgentId, Error, Result, SessionId};
use crate::pb;

use super::convert::{
    agent_ids, duration, duration_from, json_object, json_object_from, json_value, json_value_from, timestamp,
    timestamp_from,
};

pub fn agent_descriptor_from(field: &str, d: pb::AgentDescriptor) -> Result<AgentDescriptor> {
    let convert = || -> Result<AgentDescriptor> {
        let capabilities = d.capabilities.unwrap_or_default();
        let performance_profile = capabilities
            .performance_profile
            .map(|p| -> Result<PerformanceProfile> {
                Ok(PerformanceProfile {
                    avg_response_time: p
                        .avg_response_time
                        .as_ref()
                        .map(|t| duration_from("capabilities.performance_profile.avg_response_time", t))
                        .transpose()?,
                    success_rate: p.success_rate,
                    concurrent_capacity: p.concurrent_capacity,
                })
            })
            .transpose()?;
        let endpoints = d.endpoints.unwrap_or_default();
        let metadata = d.metadata.unwrap_or_default();
        AgentDescriptor {
            agent_id: AgentId::parse_field("agent_id", &d.agent_id)?,
            framework: d.framework,
            capabilities: Capabilities {
                input_types: capabilities.input_types,
                output_types: capabilities.output_types,
                languages: capabilities.languages,
                tools: capabilities.tools,
                model_preferences: capabilities.model_preferences,
                optimal_tasks: capabilities.optimal_tasks,
                performance_profile,
            },
            endpoints: Endpoints {
                mcp: endpoints.mcp,
                http: endpoints.http,
                websocket: endpoints.websocket,
            },
            metadata: AgentMetadata {
                version: metadata.version,
                author: metadata.author,
                tags: metadata.tags,
                description: metadata.description,
            },
            health_check_url: d.health_check_url,
            status_endpoint: d.status_endpoint,
        }
        .validated()
    };
    convert().map_err(|e| e.within(field))
}

fn agent_descriptor(d: &AgentDescriptor) -> pb::AgentDescriptor {
    let c = &d.capabilities;
    pb::AgentDescriptor {
        agent_id: d.agent_id.to_string(),
        framework: d.framework.clone(),
        capabilities: Some(pb::AgentCapabilities {
            input_types: c.input_types.clone(),
            output_types: c.output_types.clone(),
            languages: c.languages.clone(),
            tools: c.tools.clone(),
            model_preferences: c.model_preferences.clone(),
            optimal_tasks: c.optimal_tasks.clone(),
            performance_profile: c.performance_profile.as_ref().map(|p| pb::PerformanceProfile {
                avg_response_time: p.avg_response_time.map(duration),
                success_rate: p.success_rate,
                concurrent_capacity: p.concurrent_capacity,
            }),
        }),
        endpoints: Some(pb::AgentEndpoints {
            mcp: d.endpoints.mcp.clone(),
            http: d.endpoints.http.clone(),
            websocket: d.endpoints.websocket.clone(),
        }),
        metadata: Some(pb::AgentMetadata {
            version: d.metadata.version.clone(),
            author: d.metadata.author.clone(),
            tags: d.metadata.tags.clone(),
            description: d.metadata.description.clone(),
        }),
        health_check_url: d.health_check_url.clone(),
        status_endpoint: d.status_endpoint.clone(),
    }
}

pub fn agent(view: &AgentView) -> pb::Agent {
    pb::Agent {
        descriptor: Some(agent_descriptor(&view.agent.descriptor)),
        online: view.online,
        last_seen: view.last_seen.map(timestamp),
        inbox_depth: view.inbox_depth,
        registered_at: Some(timestamp(view.agent.registered_at)),
        updated_at: Some(timestamp(view.agent.updated_at)),
    }
}

fn agent_ref_from(field: &str, r: Option<pb::AgentRef>) -> Result<AgentRef> {
    let r = r.ok_or_else(|| Error::invalid(field, "is required"))?;
    let convert = || -> Result<AgentRef> {
        let session_id = match r.session_id.as_str() {
            "" => None,
            id => Some(SessionId::parse_field("session_id", id)?),
        };
        AgentRef::new(AgentId::parse_field("agent_id", &r.agent_id)?, &r.framework, session_id)
    };
    convert().map_err(|e| e.within(field))
}

const MESSAGE_TYPES: [(MessageType, pb::MessageType); 5] = [
    (MessageType::TaskRequest, pb::MessageType::TaskRequest),
    (MessageType::TaskResponse, pb::MessageType::TaskResponse),
    (MessageType::StatusUpdate, pb::MessageType::StatusUpdate),
    (MessageType::Error, pb::MessageType::Error),
    (MessageType::Heartbeat, pb::MessageType::Heartbeat),
];

const PRIORITIES: [(Priority, pb::Priority); 4] = [
    (Priority::Low, pb::Priority::Low),
    (Priority::Medium, pb::Priority::Medium),
    (Priority::High, pb::Priority::High),
    (Priority::Critical, pb::Priority::Critical),
];

fn routing_from(r: Option<pb::Routing>) -> Result<Routing> {
    let Some(r) = r else { return Ok(Routing::default()) };
    let defaults = Routing::default();
    let retry_policy = match r.retry_policy {
        None => defaults.retry_policy,
        Some(p) => RetryPolicy {
            max_retries: p.max_retries,
            backoff: match pb::Backoff::try_from(p.backoff) {
                Ok(pb::Backoff::Unspecified | pb::Backoff::Linear) => Backoff::Linear,
                Ok(pb::Backoff::Exponential) => Backoff::Exponential,
                Err(_) => {
                    return Err(Error::invalid(
                        "routing.retry_policy.backoff",
                        format!("{} is not LINEAR or EXPONENTIAL", p.backoff),
                    ));
                }
            },
        },
    };
    let delivery_mode = match pb::DeliveryMode::try_from(r.delivery_mode) {
        Ok(pb::DeliveryMode::Unspecified | pb::DeliveryMode::Async) => DeliveryMode::Async,
        Ok(pb::DeliveryMode::Sync) => DeliveryMode::Sync,
        Err(_) => {
            return Err(Error::invalid(
                "routing.delivery_mode",
                format!("{} is not ASYNC or SYNC", r.delivery_mode),
            ));
        }
    };
    Ok(Routing {
        timeout: r
            .timeout
            .as_ref()
            .map(|t| duration_from("routing.timeout", t))
            .transpose()?,
        retry_policy,
        fallback_agents: agent_ids("routing.fallback_agents", &r.fallback_agents)?,
        delivery_mode,
    })
}

pub fn new_message_from(m: Option<pb::Message>) -> Result<NewMessage> {
    let m = m.ok_or_else(|| Error::invalid("message", "is required"))?;
    let convert = || -> Result<NewMessage> {
        let message_type = MESSAGE_TYPES
            .iter()
            .find(|(_, p)| *p as i32 == m.message_type)
            .map(|(t, _)| *t)
            .ok_or_else(|| {
                Error::invalid(
                    "message_type",
                    format!(
                        "{} is not TASK_REQUEST, TASK_RESPONSE, STATUS_UPDATE, ERROR or HEARTBEAT",
                        m.message_type
                    ),
                )
            })?;
        let priority = match m.priority {
            0 => Priority::Medium,
            value => PRIORITIES
                .iter()
                .find(|(_, p)| *p as i32 == value)
                .map(|(p, _)| *p)
                .ok_or_else(|| Error::invalid("priority", format!("{value} is not LOW, MEDIUM, HIGH or CRITICAL")))?,
        };
        Ok(NewMessage {
            message_id: match m.message_id.as_str() {
                "" => None,
                id => Some(MessageId::parse_field("message_id", id)?),
            },
            timestamp: m
                .timestamp
                .as_ref()
                .map(|t| timestamp_from("timestamp", t))
                .transpose()?,
            sender: agent_ref_from("sender", m.sender)?,
            recipient: agent_ref_from("recipient", m.recipient)?,
            message_type,
            priority,
            payload: json_value_from("payload", m.payload)?,
            routing: routing_from(m.routing)?,
            metadata: json_object_from("metadata", m.metadata)?,
            in_reply_to: match m.in_reply_to.as_str() {
                "" => None,
                id => Some(MessageId::parse_field("in_reply_to", id)?),
            },
            task_id: Some(m.task_id).filter(|t| !t.is_empty()),
            trace: m
                .trace_context
                .map(|t| TraceContext::parse("trace_context", &t.traceparent, &t.tracestate))
                .transpose()?,
        })
    };
    convert().map_err(|e| e.within("message"))
}

fn agent_ref(r: &AgentRef) -> pb::AgentRef {
    pb::AgentRef {
        agent_id: r.agent_id.to_string(),
        framework: r.framework.clone(),
        session_id: r.session_id.as_ref().map(ToString::to_string).unwrap_or_default(),
    }
}

pub fn message(m: &Message) -> pb::Message {
    let routing = &m.routing;
    pb::Message {
        message_id: m.message_id.to_string(),
        timestamp: Some(timestamp(m.timestamp)),
        sender: Some(agent_ref(&m.sender)),
        recipient: Some(agent_ref(&m.recipient)),
        message_type: MESSAGE_TYPES
            .iter()
            .find(|(t, _)| *t == m.message_type)
            .map_or(0, |(_, p)| *p as i32),
        priority: PRIORITIES
            .iter()
            .find(|(p, _)| *p == m.priority)
            .map_or(0, |(_, p)| *p as i32),
        payload: Some(json_value(&m.payload)),
        routing: Some(pb::Routing {
            timeout: routing.timeout.map(duration),
            retry_policy: Some(pb::RetryPolicy {
                max_retries: routing.retry_policy.max_retries,
                backoff: match routing.retry_policy.backoff {
                    Backoff::Linear => pb::Backoff::Linear,
                    Backoff::Exponential => pb::Backoff::Exponential,
                } as i32,
            }),
            fallback_agents: routing.fallback_agents.iter().map(ToString::to_string).collect(),
            delivery_mode: match routing.delivery_mode {
                DeliveryMode::Async => pb::DeliveryMode::Async,
                DeliveryMode::Sync => pb::DeliveryMode::Sync,
            } as i32,
        }),
        metadata: Some(json_object(&m.metadata)),
        in_reply_to: m.in_reply_to.as_ref().map(ToString::to_string).unwrap_or_default(),
        task_id: m.task_id.clone().unwrap_or_default(),
        trace_context: m.trace.as_ref().map(|t| pb::TraceContext {
            traceparent: t.traceparent.clone(),
            tracestate: t.tracestate.clone().unwrap_or_default(),
        }),
    }
}

pub fn message_state(state: MessageState) -> pb::MessageState {
    match state {
        MessageState::Queued => pb::MessageState::Queued,
        MessageState::Delivered => pb::MessageState::Delivered,
        MessageState::Acked => pb::MessageState::Acked,
        MessageState::Answered => pb::MessageState::Answered,
        MessageState::DeadLettered => pb::MessageState::DeadLettered,
        MessageState::Expired => pb::MessageState::Expired,
    }
}

pub fn message_status(r: &MessageRecord) -> pb::MessageStatus {
    pb::MessageStatus {
        message: Some(message(&r.message)),
        state: message_state(r.state) as i32,
        attempts: r.attempts,
        current_recipient: r.recipient.to_string(),
        accepted_at: Some(timestamp(r.accepted_at)),
        last_delivered_at: r.last_delivered_at.map(timestamp),
        acked_at: r.acked_at.map(timestamp),
        reason: r.reason.clone(),
        total_attempts: r.total_attempts,
    }
}
