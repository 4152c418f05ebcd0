//! A strict reader of the two text formats `/metrics` serves: Prometheus
//! text 0.0.4 and OpenMetrics 1.0. It rejects what a scraper would reject
//! (or silently mistype), so the tests see the exposition as Prometheus does.

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One `# TYPE` block and its samples. `name` is the name in the `# TYPE`
/// line: a counter's carries `_total` in Prometheus text, not in OpenMetrics.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: String,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
pub struct Exposition {
    pub families: Vec<Family>,
}

fn is_name(name: &str, colon: bool) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// `{a="1",b="x\"y"}` (already without the braces) into a map.
fn labels(mut text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (name, rest) = text.split_once("=\"").ok_or(format!("no =\" in {text:?}"))?;
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?} in {rest:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated value in {rest:?}")),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
    Ok(labels)
}

fn value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|e| format!("bad value {text:?}: {e}")),
    }
}

/// The sample names a family of `kind` named `name` (as in its `# TYPE`
/// line) may have.
fn sample_names(format: Format, name: &str, kind: &str) -> Vec<String> {
    match (kind, format) {
        ("counter", Format::OpenMetrics) => vec![format!("{name}_total"), format!("{name}_created")],
        ("histogram", _) => ["_bucket", "_sum", "_count", "_created"]
            .iter()
            .map(|suffix| format!("{name}{suffix}"))
            .collect(),
        ("info", Format::OpenMetrics) => vec![format!("{name}_info")],
        _ => vec![name.to_owned()],
    }
}

impl Exposition {
    pub fn parse(format: Format, text: &str) -> Result<Exposition, String> {
        let kinds: &[&str] = match format {
            Format::Prometheus => &["counter", "gauge", "histogram", "summary", "untyped"],
            Format::OpenMetrics => &[
                "counter",
                "gauge",
                "histogram",
                "gaugehistogram",
                "summary",
                "info",
                "stateset",
                "unknown",
            ],
        };
        let body = match format {
            Format::OpenMetrics => text.strip_suffix("# EOF\n").ok_or("no `# EOF` at the end")?,
            Format::Prometheus => text,
        };
        if !text.ends_with('\n') {
            return Err("no newline at the end".into());
        }
        let mut families: Vec<Family> = Vec::new();
        let mut pending_help: Option<(String, String)> = None;
        let mut series = HashSet::new();
        for line in body.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.splitn(3, ' ');
                let (keyword, name, rest) = (words.next(), words.next().unwrap_or(""), words.next());
                match keyword {
                    Some("HELP") => {
                        if families.iter().any(|f| f.name == name) {
                            return Err(format!("HELP for {name} after its samples"));
                        }
                        pending_help = Some((name.to_owned(), rest.unwrap_or("").to_owned()));
                    }
                    Some("TYPE") => {
                        let kind = rest.unwrap_or("");
                        if !is_name(name, true) || !kinds.contains(&kind) {
                            return Err(format!("bad TYPE line {line:?}"));
                        }
                        if families.iter().any(|f| f.name == name) {
                            return Err(format!("{name} typed twice"));
                        }
                        if format == Format::OpenMetrics && kind == "counter" && name.ends_with("_total") {
                            return Err(format!("OpenMetrics counter family {name} ends in _total"));
                        }
                        let help = match pending_help.take() {
                            Some((help_name, help)) if help_name == name => help,
                            Some((help_name, _)) => return Err(format!("HELP of {help_name} before TYPE of {name}")),
                            None => return Err(format!("{name} has no HELP")),
                        };
                        families.push(Family {
                            name: name.to_owned(),
                            kind: kind.to_owned(),
                            help,
                            unit: None,
                            samples: Vec::new(),
                        });
                    }
                    Some("UNIT") if format == Format::OpenMetrics => {
                        let family = families
                            .last_mut()
                            .filter(|f| f.name == name && f.samples.is_empty())
                            .ok_or(format!("UNIT of {name} outside its family's header"))?;
                        let unit = rest.unwrap_or("");
                        if !name.ends_with(&format!("_{unit}")) {
                            return Err(format!("{name} does not end with its unit {unit}"));
                        }
                        family.unit = Some(unit.to_owned());
                    }
                    _ if format == Format::OpenMetrics => return Err(format!("unknown comment {line:?}")),
                    _ => {}
                }
                continue;
            }
            if line.is_empty() {
                if format == Format::OpenMetrics {
                    return Err("empty line".into());
                }
                continue;
            }
            let (series_text, value_text) = line.rsplit_once(' ').ok_or(format!("no value in {line:?}"))?;
            let (name, label_map) = match series_text.split_once('{') {
                Some((name, rest)) => (
                    name,
                    labels(rest.strip_suffix('}').ok_or(format!("unclosed {{ in {line:?}"))?)?,
                ),
                None => (series_text, BTreeMap::new()),
            };
            if !is_name(name, true) {
                return Err(format!("bad metric name {name:?}"));
            }
            let family = families
                .last_mut()
                .filter(|f| sample_names(format, &f.name, &f.kind).iter().any(|n| n == name))
                .ok_or(format!(
                    "{name} is not a sample of the family typed just before it: {line:?}"
                ))?;
            let value = value(value_text)?;
            if family.kind == "counter" && (value.is_nan() || value < 0.0) {
                return Err(format!("negative or NaN counter {line:?}"));
            }
            if !series.insert((name.to_owned(), label_map.clone())) {
                return Err(format!("duplicate series {line:?}"));
            }
            family.samples.push(Sample {
                name: name.to_owned(),
                labels: label_map,
                value,
            });
        }
        if let Some((name, _)) = pending_help {
            return Err(format!("HELP of {name} without TYPE"));
        }
        let exposition = Exposition { families };
        for family in exposition.families.iter().filter(|f| f.kind == "histogram") {
            exposition.check_histogram(family)?;
        }
        Ok(exposition)
    }

    /// Buckets ascend in `le` and never in count, end with `+Inf`, which
    /// equals `_count`; every series has a `_sum`.
    fn check_histogram(&self, family: &Family) -> Result<(), String> {
        let mut by_series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in family.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
            let mut labels = sample.labels.clone();
            let le = labels
                .remove("le")
                .ok_or(format!("bucket without le in {}", family.name))?;
            by_series.entry(labels).or_default().push((value(&le)?, sample.value));
        }
        if by_series.is_empty() && !family.samples.is_empty() {
            return Err(format!("{} has samples but no buckets", family.name));
        }
        for (labels, buckets) in by_series {
            let mut buckets = buckets;
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
                return Err(format!("{} {labels:?} has no +Inf bucket", family.name));
            }
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!(
                    "{} {labels:?} buckets are not cumulative: {buckets:?}",
                    family.name
                ));
            }
            let find = |suffix: &str| {
                family
                    .samples
                    .iter()
                    .find(|s| s.name.ends_with(suffix) && s.labels == labels)
                    .map(|s| s.value)
            };
            let count = find("_count").ok_or(format!("{} {labels:?} has no _count", family.name))?;
            find("_sum").ok_or(format!("{} {labels:?} has no _sum", family.name))?;
            if buckets.last().map(|b| b.1) != Some(count) {
                return Err(format!("{} {labels:?}: +Inf bucket is not _count", family.name));
            }
        }
        Ok(())
    }

    /// The family of the `# TYPE` line naming `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the series `name{labels}`, labels in any order.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// The sum over every series named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}
