//! Reading the workers' Prometheus text exposition: counters summed by flow, and latency
//! quantiles estimated from histogram buckets the way PromQL's `histogram_quantile` does.

use std::collections::BTreeMap;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text format, skipping comments and lines it cannot read.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], BTreeMap::new(), &line[space..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        chars.next()?; // '='
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim().to_string(), value);
    }
}

/// Whether a sample's `flow` label names `flow`. Workers label flows `<namespace>/<name>`;
/// a bare name matches too.
fn is_flow(sample: &Sample, flow: &str) -> bool {
    sample.labels.get("flow").is_some_and(|label| {
        label == flow || label.rsplit_once('/').is_some_and(|(_, name)| name == flow)
    })
}

/// Sum of every sample of `name` whose `flow` label names `flow`.
pub fn sum_for_flow(samples: &[Sample], name: &str, flow: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && is_flow(s, flow))
        // Not `sum()`: an empty float sum is -0.0, which prints as "-0".
        .fold(0.0, |total, s| total + s.value)
}

/// Cumulative histogram buckets (`le` → count) of `<name>_bucket` for one flow, summed over
/// every other label (routes).
pub fn buckets_for_flow(samples: &[Sample], name: &str, flow: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == bucket && is_flow(s, flow))
    {
        let Some(le) = s.labels.get("le").and_then(|le| match le.as_str() {
            "+Inf" => Some(f64::INFINITY),
            v => v.parse::<f64>().ok(),
        }) else {
            continue;
        };
        let entry = by_le.entry(le.to_bits()).or_insert((le, 0.0));
        entry.1 += s.value;
    }
    let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile of cumulative buckets, by linear interpolation inside the bucket that holds
/// it (PromQL semantics). `None` when there are no observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                // The answer lies beyond the largest finite bucket: report that bound.
                return Some(lower_bound);
            }
            let in_bucket = count - lower_count;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower_bound + (le - lower_bound) * (rank - lower_count) / in_bucket);
        }
        lower_bound = le;
        lower_count = count;
    }
    Some(lower_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP millrace_events_delivered_total Events delivered.
# TYPE millrace_events_delivered_total counter
millrace_events_delivered_total{flow="a",route="erp"} 10
millrace_events_delivered_total{flow="a",route="wms"} 5
millrace_events_delivered_total{flow="plant-berlin/b",route="erp"} 7
millrace_events_delivered_total{flow="plant-berlin/bb",route="erp"} 100
millrace_end_to_end_latency_seconds_bucket{flow="a",route="erp",le="0.1"} 50
millrace_end_to_end_latency_seconds_bucket{flow="a",route="erp",le="1.0"} 90
millrace_end_to_end_latency_seconds_bucket{flow="a",route="erp",le="+Inf"} 100
millrace_end_to_end_latency_seconds_bucket{flow="a",route="wms",le="0.1"} 0
millrace_end_to_end_latency_seconds_bucket{flow="a",route="wms",le="1.0"} 0
millrace_end_to_end_latency_seconds_bucket{flow="a",route="wms",le="+Inf"} 0
millrace_up 1
odd{reason="say \"hi\", ok"} 2 1700000000
"#;

    #[test]
    fn counters_sum_over_routes() {
        let s = parse(TEXT);
        assert_eq!(
            sum_for_flow(&s, "millrace_events_delivered_total", "a"),
            15.0
        );
        assert_eq!(
            sum_for_flow(&s, "millrace_events_delivered_total", "b"),
            7.0
        );
        assert_eq!(
            sum_for_flow(&s, "millrace_events_delivered_total", "c"),
            0.0
        );
    }

    #[test]
    fn labels_with_escapes_and_timestamps_parse() {
        let s = parse(TEXT);
        let odd = s.iter().find(|s| s.name == "odd").unwrap();
        assert_eq!(odd.labels["reason"], "say \"hi\", ok");
        assert_eq!(odd.value, 2.0);
        assert!(s.iter().any(|s| s.name == "millrace_up" && s.value == 1.0));
    }

    #[test]
    fn quantiles_interpolate_like_promql() {
        let s = parse(TEXT);
        let b = buckets_for_flow(&s, "millrace_end_to_end_latency_seconds", "a");
        assert_eq!(b.len(), 3);
        let p50 = quantile(0.5, &b).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let p70 = quantile(0.7, &b).unwrap();
        assert!((p70 - 0.55).abs() < 1e-9, "{p70}");
        // Beyond the last finite bucket: its bound.
        assert_eq!(quantile(0.99, &b), Some(1.0));
        assert_eq!(quantile(0.5, &[]), None);
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
    }
}
