//! Registered agents and what they declare about themselves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::ids::AgentId;
use super::time::Timestamp;
use super::validate::{check_list, check_text};

const MAX_LIST: usize = 256;
const MAX_ITEM: usize = 256;
const MAX_TEXT: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerformanceProfile {
    pub avg_response_time: Option<Duration>,
    pub success_rate: f64,
    pub concurrent_capacity: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub input_types: Vec<String>,
    pub output_types: Vec<String>,
    pub languages: Vec<String>,
    pub tools: Vec<String>,
    pub model_preferences: Vec<String>,
    pub optimal_tasks: Vec<String>,
    pub performance_profile: Option<PerformanceProfile>,
}

impl Capabilities {
    fn lists(&self) -> [(&'static str, &Vec<String>); 6] {
        [
            ("input_types", &self.input_types),
            ("output_types", &self.output_types),
            ("languages", &self.languages),
            ("tools", &self.tools),
            ("model_preferences", &self.model_preferences),
            ("optimal_tasks", &self.optimal_tasks),
        ]
    }

    /// Whether any capability list names `capability`.
    pub fn mentions(&self, capability: &str) -> bool {
        self.lists()
            .iter()
            .any(|(_, list)| list.iter().any(|c| c == capability))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoints {
    pub mcp: String,
    pub http: String,
    pub websocket: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentMetadata {
    pub version: String,
    pub author: String,
    pub tags: Vec<String>,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDescriptor {
    pub agent_id: AgentId,
    pub framework: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub endpoints: Endpoints,
    #[serde(default)]
    pub metadata: AgentMetadata,
    #[serde(default)]
    pub health_check_url: String,
    #[serde(default)]
    pub status_endpoint: String,
}

impl AgentDescriptor {
    /// A descriptor with nothing but the id (and its framework).
    pub fn new(agent_id: AgentId) -> Self {
        Self {
            framework: agent_id.framework().to_owned(),
            agent_id,
            capabilities: Capabilities::default(),
            endpoints: Endpoints::default(),
            metadata: AgentMetadata::default(),
            health_check_url: String::new(),
            status_endpoint: String::new(),
        }
    }

    /// Checks everything but the id (already parsed); errors name the field
    /// within the descriptor. An empty framework defaults from the id.
    pub fn validated(mut self) -> Result<Self> {
        if self.framework.is_empty() {
            self.framework = self.agent_id.framework().to_owned();
        } else if self.framework != self.agent_id.framework() {
            return Err(Error::invalid(
                "framework",
                format!(
                    "{:?} does not match the framework {:?} of agent id {}",
                    self.framework,
                    self.agent_id.framework(),
                    self.agent_id
                ),
            ));
        }
        for (name, list) in self.capabilities.lists() {
            check_list(&format!("capabilities.{name}"), list, MAX_LIST, MAX_ITEM)?;
        }
        if let Some(profile) = &self.capabilities.performance_profile
            && !(0.0..=1.0).contains(&profile.success_rate)
        {
            return Err(Error::invalid(
                "capabilities.performance_profile.success_rate",
                format!("must be between 0 and 1, got {}", profile.success_rate),
            ));
        }
        for (name, value) in [
            ("endpoints.mcp", &self.endpoints.mcp),
            ("endpoints.http", &self.endpoints.http),
            ("endpoints.websocket", &self.endpoints.websocket),
            ("metadata.version", &self.metadata.version),
            ("metadata.author", &self.metadata.author),
            ("metadata.description", &self.metadata.description),
            ("health_check_url", &self.health_check_url),
            ("status_endpoint", &self.status_endpoint),
        ] {
            check_text(name, value, MAX_TEXT)?;
        }
        check_list("metadata.tags", &self.metadata.tags, MAX_LIST, MAX_ITEM)?;
        Ok(self)
    }
}

/// A registration as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub descriptor: AgentDescriptor,
    pub registered_at: Timestamp,
    pub updated_at: Timestamp,
    /// Increments on every change of the registration.
    pub version: u64,
}

impl Agent {
    /// A first registration, at version 1.
    pub fn registered(descriptor: AgentDescriptor, now: Timestamp) -> Self {
        Self {
            descriptor,
            registered_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// This registration with its descriptor replaced, at the next version.
    pub fn updated(&self, descriptor: AgentDescriptor, now: Timestamp) -> Self {
        Self {
            descriptor,
            registered_at: self.registered_at,
            updated_at: now,
            version: self.version + 1,
        }
    }

    pub fn id(&self) -> &AgentId {
        &self.descriptor.agent_id
    }
}
