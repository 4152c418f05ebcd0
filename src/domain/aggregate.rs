//! Task results and their aggregation: what agents answered, where they
//! disagree, and one answer from several, by a named strategy. Pure and
//! deterministic: the same tasks give the same aggregation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::session::{Task, TaskState};
use super::{AgentId, Error, Result, Timestamp};

/// Each conflict lowers a consensus's confidence by this much.
const CONFLICT_PENALTY: f64 = 0.1;
/// Longest `approach`, in characters.
const MAX_APPROACH_CHARS: usize = 256;

/// What a TASK_RESPONSE reported, typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub result: Json,
    pub confidence: Option<f64>,
    #[serde(default)]
    pub approach: String,
    pub success: bool,
}

impl TaskResult {
    /// Reads `result`, `confidence` (0 to 1), `approach` and `success`
    /// (default true) from a TASK_RESPONSE's payload; a payload that is not
    /// an object with `result` is the result itself. Errors name the field.
    pub fn from_payload(payload: &Json) -> Result<Self> {
        let Some(fields) = payload.as_object().filter(|o| o.contains_key("result")) else {
            return Ok(Self {
                result: payload.clone(),
                confidence: None,
                approach: String::new(),
                success: true,
            });
        };
        let confidence = match fields.get("confidence") {
            None | Some(Json::Null) => None,
            Some(value) => match value.as_f64() {
                Some(c) if (0.0..=1.0).contains(&c) => Some(c),
                _ => {
                    return Err(Error::invalid(
                        "payload.confidence",
                        format!("{value} is not a number from 0 to 1"),
                    ));
                }
            },
        };
        let approach = match fields.get("approach") {
            None | Some(Json::Null) => String::new(),
            Some(Json::String(text)) if text.chars().count() <= MAX_APPROACH_CHARS => text.clone(),
            Some(other) => {
                return Err(Error::invalid(
                    "payload.approach",
                    format!("{other} is not a string of at most {MAX_APPROACH_CHARS} characters"),
                ));
            }
        };
        let success = match fields.get("success") {
            None | Some(Json::Null) => true,
            Some(Json::Bool(success)) => *success,
            Some(other) => {
                return Err(Error::invalid(
                    "payload.success",
                    format!("{other} is not true or false"),
                ));
            }
        };
        Ok(Self {
            result: fields["result"].clone(),
            confidence,
            approach,
            success,
        })
    }

    /// An ERROR that failed the task: unsuccessful, its payload as result.
    pub fn failure(payload: &Json) -> Self {
        Self {
            result: payload.clone(),
            confidence: None,
            approach: String::new(),
            success: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Consensus,
    SpecialistPriority,
    ConfidenceWeighted,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    ResultDisagreement,
    ApproachDifference,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub kind: ConflictKind,
    pub task_ids: Vec<String>,
    pub detail: String,
}

/// A finished task's answer, as aggregation sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub task_id: String,
    pub agent_id: AgentId,
    pub result: TaskResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    pub chosen_task_id: String,
    pub note: String,
    pub resolved_by: AgentId,
    pub resolved_at: Timestamp,
}

/// One aggregation, as stored in its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregation {
    pub aggregation_id: String,
    pub strategy: Strategy,
    /// The step whose tasks were aggregated, when chosen by step.
    pub step: String,
    pub specialist: Option<AgentId>,
    /// None for MANUAL until resolved.
    pub result: Option<Json>,
    pub confidence: f64,
    pub contributing_task_ids: Vec<String>,
    pub conflicts: Vec<Conflict>,
    pub candidates: Vec<Candidate>,
    /// Selected tasks that had not finished.
    pub missing_task_ids: Vec<String>,
    pub created_at: Timestamp,
    pub resolution: Option<Resolution>,
}

/// What to aggregate and how.
#[derive(Debug, Clone)]
pub struct AggregationRequest {
    pub task_ids: Vec<String>,
    pub step: String,
    pub strategy: Strategy,
    pub specialist: Option<AgentId>,
    pub require_complete: bool,
}

/// A JSON value's canonical text: object keys sorted at every level, so
/// that `{"a":1,"b":2}` and `{"b":2,"a":1}` agree.
pub fn canonical(value: &Json) -> String {
    fn sorted(value: &Json) -> Json {
        match value {
            Json::Object(map) => {
                let ordered: BTreeMap<_, _> = map.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
                Json::Object(ordered.into_iter().collect())
            }
            Json::Array(items) => Json::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Six decimals: enough for a confidence, without float noise such as
/// 0.03333333333333327.
fn rounded(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// The conflicts among successful candidates: each pair with different
/// results, and one for differing approaches.
fn conflicts(successful: &[&Candidate]) -> Vec<Conflict> {
    let mut found = Vec::new();
    for (i, a) in successful.iter().enumerate() {
        for b in &successful[i + 1..] {
            if canonical(&a.result.result) != canonical(&b.result.result) {
                found.push(Conflict {
                    kind: ConflictKind::ResultDisagreement,
                    task_ids: vec![a.task_id.clone(), b.task_id.clone()],
                    detail: format!(
                        "{} answered {}, {} answered {}",
                        a.agent_id, a.result.result, b.agent_id, b.result.result
                    ),
                });
            }
        }
    }
    let named: Vec<&&Candidate> = successful.iter().filter(|c| !c.result.approach.is_empty()).collect();
    let mut approaches: Vec<&str> = named.iter().map(|c| c.result.approach.as_str()).collect();
    approaches.sort_unstable();
    approaches.dedup();
    if approaches.len() > 1 {
        found.push(Conflict {
            kind: ConflictKind::ApproachDifference,
            task_ids: named.iter().map(|c| c.task_id.clone()).collect(),
            detail: format!("approaches differ: {}", approaches.join(", ")),
        });
    }
    found
}

/// An aggregation's answer: the result, the tasks behind it, the confidence.
type Outcome = (Json, Vec<String>, f64);

/// One candidate's answer as the aggregation's; confidence 1 if it gave none.
fn picked(candidate: &Candidate) -> Outcome {
    (
        candidate.result.result.clone(),
        vec![candidate.task_id.clone()],
        candidate.result.confidence.unwrap_or(1.0),
    )
}

/// The most frequent result among `successful` (ties: the result reached
/// first, in task order), its supporters and the confidence: their share,
/// less [`CONFLICT_PENALTY`] per conflict, floored at 0.
fn consensus(successful: &[&Candidate], conflict_count: usize) -> Outcome {
    let mut groups: Vec<(String, Vec<&Candidate>)> = Vec::new();
    for candidate in successful {
        let key = canonical(&candidate.result.result);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(candidate),
            None => groups.push((key, vec![candidate])),
        }
    }
    // max_by_key keeps the last maximum; iterate in reverse to keep the first.
    let Some((_, winners)) = groups.iter().rev().max_by_key(|(_, members)| members.len()) else {
        return (Json::Null, Vec::new(), 0.0);
    };
    let share = winners.len() as f64 / successful.len() as f64;
    let confidence = rounded((share - CONFLICT_PENALTY * conflict_count as f64).max(0.0));
    (
        winners[0].result.result.clone(),
        winners.iter().map(|c| c.task_id.clone()).collect(),
        confidence,
    )
}

/// Aggregates the selected tasks (in task order) of a session.
pub fn aggregate(
    tasks: &[Task],
    request: &AggregationRequest,
    aggregation_id: String,
    now: Timestamp,
) -> Result<Aggregation> {
    let selected: Vec<&Task> = if !request.task_ids.is_empty() {
        let mut picked = Vec::new();
        for (i, id) in request.task_ids.iter().enumerate() {
            let task = tasks
                .iter()
                .find(|t| &t.task_id == id)
                .ok_or_else(|| Error::invalid(format!("task_ids[{i}]"), format!("no task {id:?} in this session")))?;
            if !picked.iter().any(|t: &&Task| t.task_id == task.task_id) {
                picked.push(task);
            }
        }
        picked
    } else if !request.step.is_empty() {
        tasks.iter().filter(|t| t.step == request.step).collect()
    } else {
        tasks.iter().collect()
    };
    if selected.is_empty() {
        return Err(Error::failed_precondition(match request.step.as_str() {
            "" => "the session has no tasks to aggregate".to_owned(),
            step => format!("step {step:?} has no tasks to aggregate"),
        }));
    }
    let missing: Vec<String> = selected
        .iter()
        .filter(|t| !t.state.is_final())
        .map(|t| t.task_id.clone())
        .collect();
    if request.require_complete && !missing.is_empty() {
        return Err(Error::failed_precondition(format!(
            "tasks still running: {} (require_complete is set)",
            missing.join(", ")
        )));
    }
    let candidates: Vec<Candidate> = selected
        .iter()
        .filter(|t| t.state.is_final())
        .filter_map(|t| {
            let result = match (&t.result, t.state) {
                (Some(result), _) => result.clone(),
                (None, TaskState::Completed) => TaskResult::from_payload(t.last_payload.as_ref()?).ok()?,
                (None, _) => TaskResult::failure(t.last_payload.as_ref().unwrap_or(&Json::Null)),
            };
            Some(Candidate {
                task_id: t.task_id.clone(),
                agent_id: t.assignee.clone(),
                result,
            })
        })
        .collect();
    let successful: Vec<&Candidate> = candidates.iter().filter(|c| c.result.success).collect();
    let conflicts = conflicts(&successful);
    let mut aggregation = Aggregation {
        aggregation_id,
        strategy: request.strategy,
        step: request.step.clone(),
        specialist: request.specialist.clone(),
        result: None,
        confidence: 0.0,
        contributing_task_ids: Vec::new(),
        conflicts,
        candidates: Vec::new(),
        missing_task_ids: missing,
        created_at: now,
        resolution: None,
    };
    let no_success = || {
        Error::failed_precondition(format!(
            "none of the {} finished tasks succeeded; nothing to aggregate (MANUAL lists them)",
            candidates.len()
        ))
    };
    let conflict_count = aggregation.conflicts.len();
    let outcome = match request.strategy {
        Strategy::Consensus => {
            if successful.is_empty() {
                return Err(no_success());
            }
            Some(consensus(&successful, conflict_count))
        }
        Strategy::SpecialistPriority => {
            let specialist = request
                .specialist
                .as_ref()
                .ok_or_else(|| Error::invalid("specialist", "is required for SPECIALIST_PRIORITY"))?;
            // The specialist's latest successful answer, else consensus.
            match successful.iter().rev().find(|c| &c.agent_id == specialist) {
                Some(chosen) => Some(picked(chosen)),
                None if successful.is_empty() => return Err(no_success()),
                None => Some(consensus(&successful, conflict_count)),
            }
        }
        Strategy::ConfidenceWeighted => {
            if successful.is_empty() {
                return Err(no_success());
            }
            let mut weighted = 0.0;
            let mut weights = 0.0;
            for candidate in &successful {
                let value = candidate.result.result.as_f64().ok_or_else(|| {
                    Error::invalid(
                        "strategy",
                        format!(
                            "CONFIDENCE_WEIGHTED needs numeric results; task {} answered {}",
                            candidate.task_id, candidate.result.result
                        ),
                    )
                })?;
                // A result without a confidence weighs as a certain one.
                let weight = candidate.result.confidence.unwrap_or(1.0);
                weighted += value * weight;
                weights += weight;
            }
            let mean = if weights > 0.0 {
                weighted / weights
            } else {
                let values: Vec<f64> = successful.iter().filter_map(|c| c.result.result.as_f64()).collect();
                values.iter().sum::<f64>() / values.len() as f64
            };
            Some((
                serde_json::Number::from_f64(mean).map_or(Json::Null, Json::Number),
                successful.iter().map(|c| c.task_id.clone()).collect(),
                rounded(weights / successful.len() as f64),
            ))
        }
        Strategy::Manual => None,
    };
    if let Some(outcome) = outcome {
        aggregation.settle(outcome);
    }
    aggregation.candidates = candidates;
    Ok(aggregation)
}

impl Aggregation {
    fn settle(&mut self, (result, contributing, confidence): Outcome) {
        self.result = Some(result);
        self.contributing_task_ids = contributing;
        self.confidence = confidence;
    }

    /// Records the orchestrator's pick among the candidates.
    pub fn resolve(&mut self, chosen_task_id: &str, note: String, by: AgentId, now: Timestamp) -> Result<()> {
        let chosen = self
            .candidates
            .iter()
            .find(|c| c.task_id == chosen_task_id)
            .ok_or_else(|| {
                let ids: Vec<&str> = self.candidates.iter().map(|c| c.task_id.as_str()).collect();
                Error::invalid(
                    "chosen_task_id",
                    format!(
                        "{chosen_task_id:?} is not a candidate; choose one of: {}",
                        ids.join(", ")
                    ),
                )
            })?;
        if !chosen.result.success {
            return Err(Error::invalid(
                "chosen_task_id",
                format!("task {chosen_task_id} did not succeed; choose a successful candidate"),
            ));
        }
        self.settle(picked(chosen));
        self.resolution = Some(Resolution {
            chosen_task_id: chosen_task_id.to_owned(),
            note,
            resolved_by: by,
            resolved_at: now,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task(id: &str, agent: &str, result: Json, state: TaskState) -> Task {
        Task {
            task_id: id.into(),
            assignee: AgentId::parse(agent).unwrap(),
            delegated_by: AgentId::parse("claude-code://orchestrator").unwrap(),
            request_id: id.into(),
            state,
            created_at: Timestamp::from_unix_micros(0),
            updated_at: Timestamp::from_unix_micros(0),
            last_payload: Some(result.clone()),
            result: TaskResult::from_payload(&result).ok(),
            step: "build".into(),
            updates: 1,
        }
    }

    fn request(strategy: Strategy) -> AggregationRequest {
        AggregationRequest {
            task_ids: Vec::new(),
            step: String::new(),
            strategy,
            specialist: None,
            require_complete: false,
        }
    }

    fn run(tasks: &[Task], request: &AggregationRequest) -> Result<Aggregation> {
        aggregate(tasks, request, "agg_1".into(), Timestamp::from_unix_micros(1))
    }

    #[test]
    fn consensus_takes_the_most_frequent_result_and_counts_conflicts() {
        let done = TaskState::Completed;
        let tasks = [
            task(
                "t1",
                "opencode://a",
                json!({"result": {"x": 1, "y": 2}, "approach": "rest"}),
                done,
            ),
            task(
                "t2",
                "codex://b",
                json!({"result": {"y": 2, "x": 1}, "approach": "rest"}),
                done,
            ),
            task("t3", "aider://c", json!({"result": {"x": 3}, "approach": "grpc"}), done),
            task("t4", "aider://d", json!({"result": 9, "success": false}), done),
            task("t5", "aider://e", json!(null), TaskState::Working),
        ];
        let agg = run(&tasks, &request(Strategy::Consensus)).unwrap();
        assert_eq!(agg.result, Some(json!({"x": 1, "y": 2})));
        assert_eq!(agg.contributing_task_ids, ["t1", "t2"]);
        // Two disagreeing pairs (t1-t3, t2-t3) and one approach difference.
        assert_eq!(agg.conflicts.len(), 3);
        assert_eq!(agg.confidence, 0.366667);
        assert_eq!(agg.missing_task_ids, ["t5"]);
        assert_eq!(agg.candidates.len(), 4);
        let mut strict = request(Strategy::Consensus);
        strict.require_complete = true;
        assert!(run(&tasks, &strict).unwrap_err().message.contains("t5"));
        // Ties go to the result reached first.
        let tie = [
            task("a", "opencode://a", json!({"result": "left"}), done),
            task("b", "codex://b", json!({"result": "right"}), done),
        ];
        assert_eq!(
            run(&tie, &request(Strategy::Consensus)).unwrap().result,
            Some(json!("left"))
        );
    }

    #[test]
    fn specialist_then_weighted_then_manual() {
        let done = TaskState::Completed;
        let tasks = [
            task("t1", "opencode://a", json!({"result": 10, "confidence": 0.9}), done),
            task("t2", "codex://b", json!({"result": 20, "confidence": 0.1}), done),
        ];
        let mut specialist = request(Strategy::SpecialistPriority);
        specialist.specialist = Some(AgentId::parse("codex://b").unwrap());
        let agg = run(&tasks, &specialist).unwrap();
        assert_eq!((agg.result, agg.confidence), (Some(json!(20)), 0.1));
        specialist.specialist = Some(AgentId::parse("codex://absent").unwrap());
        assert_eq!(run(&tasks, &specialist).unwrap().contributing_task_ids, ["t1"]);

        let agg = run(&tasks, &request(Strategy::ConfidenceWeighted)).unwrap();
        assert_eq!(agg.result, Some(json!(11.0)));
        let words = [task("w", "opencode://a", json!({"result": "ten"}), done)];
        let error = run(&words, &request(Strategy::ConfidenceWeighted)).unwrap_err();
        assert!(error.message.contains("task w"), "{}", error.message);

        let mut manual = run(&tasks, &request(Strategy::Manual)).unwrap();
        assert_eq!(manual.result, None);
        assert_eq!(manual.candidates.len(), 2);
        let by = AgentId::parse("claude-code://orchestrator").unwrap();
        assert!(
            manual
                .resolve("nope", String::new(), by.clone(), Timestamp::from_unix_micros(2))
                .is_err()
        );
        manual
            .resolve("t2", "cheaper".into(), by.clone(), Timestamp::from_unix_micros(2))
            .unwrap();
        let failed_task = [task("f", "aider://f", json!({"result": 1, "success": false}), done)];
        let mut failed = run(&failed_task, &request(Strategy::Manual)).unwrap();
        assert!(
            failed
                .resolve("f", String::new(), by, Timestamp::from_unix_micros(2))
                .is_err()
        );
        assert_eq!(manual.result, Some(json!(20)));
    }

    #[test]
    fn task_results_are_validated() {
        assert!(TaskResult::from_payload(&json!({"result": 1, "confidence": 1.5})).is_err());
        assert!(TaskResult::from_payload(&json!({"result": 1, "success": "yes"})).is_err());
        let plain = TaskResult::from_payload(&json!({"files": 3})).unwrap();
        assert_eq!(plain.result, json!({"files": 3}));
        assert!(plain.success);
        assert_eq!(
            canonical(&json!({"b": [1, {"d": 1, "c": 2}], "a": 0})),
            r#"{"a":0,"b":[1,{"c":2,"d":1}]}"#
        );
    }
}
