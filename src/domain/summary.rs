//! The executive summary a session gets when it ends: per workflow step its
//! agents, tasks and aggregated result, the conflicts left unresolved, the
//! artifacts and totals, for a person to read (as JSON or Markdown).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::aggregate::{AggregationRequest, Conflict, Strategy, aggregate};
use super::session::{Session, SessionState, TaskState};
use super::{AgentId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Completed,
    Current,
    Pending,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub task_id: String,
    pub assignee: AgentId,
    pub state: TaskState,
    pub success: bool,
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    pub name: String,
    pub state: StepState,
    /// Its required agents, then the other agents that had tasks in it.
    pub agents: Vec<AgentId>,
    pub tasks: Vec<TaskOutcome>,
    /// The step's latest aggregation, else the consensus of its results.
    pub result: Option<Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub agent_id: AgentId,
    pub tasks: u32,
    pub completed: u32,
    pub failed: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Task messages: each request and each reply that moved a task.
    pub messages: u64,
    pub tasks_completed: u32,
    pub tasks_failed: u32,
    pub tasks_timed_out: u32,
    pub duration: Duration,
    pub contributions: Vec<Contribution>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveSummary {
    /// Completed, terminated or expired.
    pub outcome: SessionState,
    /// The caller's summary, or the termination reason and details.
    pub text: String,
    pub steps: Vec<StepSummary>,
    /// Conflicts of each step's latest aggregation that no pick resolved.
    pub unresolved_conflicts: Vec<Conflict>,
    pub artifacts: Vec<String>,
    pub totals: Totals,
    pub generated_at: Timestamp,
}

fn state_word(state: TaskState) -> &'static str {
    match state {
        TaskState::Delegated => "delegated",
        TaskState::Working => "working",
        TaskState::Completed => "completed",
        TaskState::Failed => "failed",
        TaskState::TimedOut => "timed out",
    }
}

/// `850 ms`, `12.3 s`.
fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

impl ExecutiveSummary {
    /// Summarises a session that has just ended.
    pub fn of(session: &Session, now: Timestamp) -> Self {
        let workflow = &session.workflow;
        let mut unresolved = Vec::new();
        let steps = workflow
            .steps
            .iter()
            .map(|step| {
                let state = if workflow.completed_steps.contains(&step.name) {
                    StepState::Completed
                } else if workflow.current_step == step.name {
                    StepState::Current
                } else {
                    StepState::Pending
                };
                let tasks: Vec<_> = session.tasks.iter().filter(|t| t.step == step.name).collect();
                let mut agents = step.required_agents.clone();
                for task in &tasks {
                    if !agents.contains(&task.assignee) {
                        agents.push(task.assignee.clone());
                    }
                }
                let latest = session.aggregations.iter().rev().find(|a| a.step == step.name);
                if let Some(latest) = latest.filter(|a| a.resolution.is_none()) {
                    unresolved.extend(latest.conflicts.iter().cloned());
                }
                let result = match latest {
                    Some(aggregation) => aggregation.result.clone(),
                    None => {
                        let request = AggregationRequest {
                            task_ids: Vec::new(),
                            step: step.name.clone(),
                            strategy: Strategy::Consensus,
                            specialist: None,
                            require_complete: false,
                        };
                        aggregate(&session.tasks, &request, String::new(), now)
                            .ok()
                            .and_then(|a| a.result)
                    }
                };
                StepSummary {
                    name: step.name.clone(),
                    state,
                    agents,
                    tasks: tasks
                        .iter()
                        .map(|t| TaskOutcome {
                            task_id: t.task_id.clone(),
                            assignee: t.assignee.clone(),
                            state: t.state,
                            success: t.state == TaskState::Completed && t.result.as_ref().is_none_or(|r| r.success),
                            duration: t.duration(),
                        })
                        .collect(),
                    result,
                }
            })
            .collect();
        let count = |state: TaskState| session.tasks.iter().filter(|t| t.state == state).count() as u32;
        let mut contributions: BTreeMap<&AgentId, Contribution> = BTreeMap::new();
        for task in &session.tasks {
            let entry = contributions.entry(&task.assignee).or_insert_with(|| Contribution {
                agent_id: task.assignee.clone(),
                tasks: 0,
                completed: 0,
                failed: 0,
            });
            entry.tasks += 1;
            match task.state {
                TaskState::Completed => entry.completed += 1,
                TaskState::Failed | TaskState::TimedOut => entry.failed += 1,
                _ => {}
            }
        }
        let text = match session.state {
            SessionState::Terminated if session.termination_details.is_empty() => session.termination_reason.clone(),
            SessionState::Terminated => format!("{}: {}", session.termination_reason, session.termination_details),
            SessionState::Expired => "expired after being idle".to_owned(),
            _ => session.summary.clone(),
        };
        let ended = session.ended_at.unwrap_or(now);
        let micros = ended.unix_micros().saturating_sub(session.created_at.unix_micros());
        Self {
            outcome: session.state,
            text,
            steps,
            unresolved_conflicts: unresolved,
            artifacts: session.artifacts.clone(),
            totals: Totals {
                messages: session.tasks.iter().map(|t| 1 + u64::from(t.updates)).sum(),
                tasks_completed: count(TaskState::Completed),
                tasks_failed: count(TaskState::Failed),
                tasks_timed_out: count(TaskState::TimedOut),
                duration: Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
                contributions: contributions.into_values().collect(),
            },
            generated_at: now,
        }
    }

    /// The summary as Markdown, for people.
    pub fn to_markdown(&self, session_id: &str) -> String {
        let mut out = String::new();
        let outcome = self.outcome.as_str();
        let _ = writeln!(out, "# Session {session_id}: {outcome}\n");
        if !self.text.is_empty() {
            let _ = writeln!(out, "{}\n", self.text);
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "**Totals:** {} tasks completed, {} failed, {} timed out; {} task messages; {}.\n",
            t.tasks_completed,
            t.tasks_failed,
            t.tasks_timed_out,
            t.messages,
            seconds(t.duration)
        );
        for step in &self.steps {
            let state = match step.state {
                StepState::Completed => "completed",
                StepState::Current => "current",
                StepState::Pending => "pending",
            };
            let _ = writeln!(out, "## {} ({state})\n", step.name);
            if !step.agents.is_empty() {
                let agents: Vec<String> = step.agents.iter().map(ToString::to_string).collect();
                let _ = writeln!(out, "Agents: {}\n", agents.join(", "));
            }
            for task in &step.tasks {
                let took = task.duration.map(|d| format!(" in {}", seconds(d))).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "- `{}` by {}: {}{took}",
                    task.task_id,
                    task.assignee,
                    state_word(task.state)
                );
            }
            if !step.tasks.is_empty() {
                out.push('\n');
            }
            if let Some(result) = &step.result {
                let _ = writeln!(out, "Result: `{result}`\n");
            }
        }
        if !self.unresolved_conflicts.is_empty() {
            let _ = writeln!(out, "## Unresolved conflicts\n");
            for conflict in &self.unresolved_conflicts {
                let _ = writeln!(out, "- {} ({})", conflict.detail, conflict.task_ids.join(", "));
            }
            out.push('\n');
        }
        if !self.artifacts.is_empty() {
            let _ = writeln!(out, "## Artifacts\n");
            for artifact in &self.artifacts {
                let _ = writeln!(out, "- {artifact}");
            }
            out.push('\n');
        }
        if !t.contributions.is_empty() {
            let _ = writeln!(
                out,
                "## Contributions\n\n| agent | tasks | completed | failed |\n| --- | --- | --- | --- |"
            );
            for c in &t.contributions {
                let _ = writeln!(out, "| {} | {} | {} | {} |", c.agent_id, c.tasks, c.completed, c.failed);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::session::{NewSession, SessionLimits, WorkflowStep};

    #[test]
    fn expiry_summarises_the_session_as_expired() {
        let orchestrator = AgentId::parse("claude-code://orchestrator").unwrap();
        let step = |name: &str| WorkflowStep {
            name: name.into(),
            ..WorkflowStep::default()
        };
        let new = NewSession {
            session_id: None,
            orchestrator: orchestrator.clone(),
            participants: Vec::new(),
            steps: vec![step("design"), step("build")],
            shared_context: Default::default(),
        };
        let start = Timestamp::from_unix_micros(1_000_000);
        let mut session = Session::create(new, &SessionLimits::default(), start).unwrap();
        session
            .expire(
                Timestamp::from_unix_micros(5_000_000),
                Timestamp::from_unix_micros(9_000_000),
            )
            .unwrap();
        let summary = session.executive_summary.as_ref().unwrap();
        assert_eq!(summary.outcome, SessionState::Expired);
        assert_eq!(summary.text, "expired after being idle");
        assert_eq!(summary.totals.duration, Duration::from_secs(8));
        let states: Vec<StepState> = summary.steps.iter().map(|s| s.state).collect();
        assert_eq!(states, [StepState::Current, StepState::Pending]);
        assert_eq!(summary.steps[0].agents, Vec::<AgentId>::new());
        let markdown = summary.to_markdown("sess_x");
        assert!(markdown.starts_with("# Session sess_x: expired"), "{markdown}");
        assert!(markdown.contains("## design (current)"), "{markdown}");
    }
}
