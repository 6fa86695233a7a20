//! `pipeline.yaml`: the environments in promotion order, each with its namespace, cluster
//! access, soak, approval and freeze windows; and `holds.yaml`, the holds of one environment.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// The promotion pipeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pipeline {
    /// Environments, in promotion order. The first is where releases are authored.
    pub environments: Vec<Environment>,
}

/// One environment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Environment {
    /// Name, also the folder `envs/<name>`.
    pub name: String,
    /// Where the environment's Millrace objects live.
    pub namespace: String,
    /// The kubeconfig context of its cluster.
    pub kube_context: String,
    /// Minimum time a flow must be Healthy here before it is promoted out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// How promotions into this environment land: a commit on the current branch, or a branch
    /// pushed for a pull request.
    #[serde(default)]
    pub approval: Approval,
    /// Windows (UTC) when nothing is promoted into this environment: `Sat 00:00-Mon 06:00`, or
    /// `22:00-06:00` for every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

/// How a promotion lands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Approval {
    /// A commit on the current branch.
    #[default]
    Direct,
    /// A commit on a new branch `promote/...`, pushed to `origin`.
    PullRequest,
}

impl Pipeline {
    /// Reads and checks `pipeline.yaml`.
    pub fn read(path: &Path) -> Result<Self> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow!("{shown}: cannot read ({e}): run `millrace init-repo` or pass --repo")
        })?;
        let pipeline: Pipeline =
            serde_yaml::from_str(&text).map_err(|e| anyhow!("{shown}: malformed: {e}"))?;
        pipeline.check().map_err(|e| anyhow!("{shown}: {e}"))?;
        Ok(pipeline)
    }

    fn check(&self) -> Result<()> {
        if self.environments.is_empty() {
            bail!("environments is empty: list the environments in promotion order");
        }
        for (i, e) in self.environments.iter().enumerate() {
            let ok = !e.name.is_empty()
                && e.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                bail!(
                    "environments[{i}].name {:?} must be lower-case letters, digits and dashes (it names the folder envs/<name>)",
                    e.name
                );
            }
            if self.environments[..i].iter().any(|o| o.name == e.name) {
                bail!("environments[{i}].name {} appears twice", e.name);
            }
            if e.namespace.is_empty() {
                bail!("environments[{i}].namespace is empty");
            }
            if let Some(s) = &e.soak {
                millrace_crds::common::parse_duration(s)
                    .map_err(|err| anyhow!("environments[{i}].soak {s:?}: {err}"))?;
            }
            for (j, w) in e.freeze.iter().enumerate() {
                FreezeWindow::parse(w)
                    .map_err(|err| anyhow!("environments[{i}].freeze[{j}] {w:?}: {err}"))?;
            }
        }
        Ok(())
    }

    /// The environment named `name`.
    pub fn environment(&self, name: &str) -> Result<&Environment> {
        self.environments
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                anyhow!(
                    "unknown environment {name}: pipeline.yaml defines {}",
                    self.names()
                )
            })
    }

    /// Position of an environment in the promotion order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.environments.iter().position(|e| e.name == name)
    }

    /// `dev, staging, prod`.
    pub fn names(&self) -> String {
        self.environments
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// True when `name` is the first environment, where releases are authored.
    pub fn is_first(&self, name: &str) -> bool {
        self.environments.first().is_some_and(|e| e.name == name)
    }
}

impl Environment {
    /// The soak, zero when unset.
    pub fn soak(&self) -> Duration {
        self.soak
            .as_deref()
            .and_then(|s| millrace_crds::common::parse_duration(s).ok())
            .unwrap_or_default()
    }

    /// The freeze window that covers `now`, if any.
    pub fn frozen_at(&self, now: DateTime<Utc>) -> Option<&str> {
        self.freeze
            .iter()
            .find(|w| FreezeWindow::parse(w).is_ok_and(|f| f.covers(now)))
            .map(String::as_str)
    }
}

/// A weekly (or daily) window, in minutes of the week (or of the day), UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreezeWindow {
    start: u32,
    end: u32,
    daily: bool,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const DAY: u32 = 24 * 60;

impl FreezeWindow {
    /// Parses `Sat 00:00-Mon 06:00` or `22:00-06:00`.
    pub fn parse(text: &str) -> Result<Self> {
        let (from, to) = text
            .split_once('-')
            .ok_or_else(|| anyhow!("write it as `Sat 00:00-Mon 06:00` or `22:00-06:00`"))?;
        let (a, a_daily) = point(from.trim())?;
        let (b, b_daily) = point(to.trim())?;
        if a_daily != b_daily {
            bail!("give a day on both ends or on neither");
        }
        if a == b {
            bail!("the window is empty");
        }
        Ok(Self {
            start: a,
            end: b,
            daily: a_daily,
        })
    }

    /// True when `now` falls in the window (the start included, the end not).
    pub fn covers(&self, now: DateTime<Utc>) -> bool {
        let minute = now.hour() * 60 + now.minute();
        let t = if self.daily {
            minute
        } else {
            now.weekday().num_days_from_monday() * DAY + minute
        };
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

fn point(text: &str) -> Result<(u32, bool)> {
    let (day, clock) = match text.split_once(' ') {
        Some((d, c)) => (Some(d), c.trim()),
        None => (None, text),
    };
    let (h, m) = clock
        .split_once(':')
        .ok_or_else(|| anyhow!("{text:?}: the time must be HH:MM"))?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| anyhow!("{text:?}: bad hour"))?,
        m.parse().map_err(|_| anyhow!("{text:?}: bad minute"))?,
    );
    if h > 23 || m > 59 {
        bail!("{text:?}: the time must be between 00:00 and 23:59");
    }
    match day {
        None => Ok((h * 60 + m, true)),
        Some(d) => {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .ok_or_else(|| anyhow!("{text:?}: the day must be one of {}", DAYS.join(", ")))?;
            Ok((i as u32 * DAY + h * 60 + m, false))
        }
    }
}

/// The holds of one environment (`envs/<env>/holds.yaml`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Holds {
    /// Each hold stops promotion of one flow (or `*`, every flow) into the environment.
    #[serde(default)]
    pub holds: Vec<Hold>,
}

/// One hold.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    /// The flow held, or `*`.
    pub flow: String,
    /// Why.
    pub reason: String,
    /// Since when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl Holds {
    /// Reads `holds.yaml`; a missing file holds nothing.
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(anyhow!("{}: cannot read: {e}", path.display())),
            Ok(text) if text.trim().is_empty() => Ok(Self::default()),
            Ok(text) => serde_yaml::from_str(&text)
                .map_err(|e| anyhow!("{}: malformed: {e}", path.display())),
        }
    }

    /// The hold on `flow`, if any.
    pub fn on(&self, flow: &str) -> Option<&Hold> {
        self.holds.iter().find(|h| h.flow == flow || h.flow == "*")
    }

    /// The file's text.
    pub fn to_yaml(&self) -> String {
        let body = serde_yaml::to_string(self).unwrap_or_default();
        format!(
            "# Holds stop promotion into this environment (`millrace hold release FLOW --env ENV` lifts one).\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn weekend_window_wraps_over_sunday() {
        let w = FreezeWindow::parse("Sat 00:00-Mon 06:00").unwrap();
        // 2026-12-05 is a Saturday.
        assert!(w.covers(at(2026, 12, 5, 0, 0)));
        assert!(w.covers(at(2026, 12, 6, 23, 59)));
        assert!(w.covers(at(2026, 12, 7, 5, 59)));
        assert!(!w.covers(at(2026, 12, 7, 6, 0)));
        assert!(!w.covers(at(2026, 12, 4, 23, 59)));
        let w = FreezeWindow::parse("Fri 18:00-Mon 06:00").unwrap();
        assert!(w.covers(at(2026, 12, 7, 1, 0)));
        let w = FreezeWindow::parse("Sun 22:00-Mon 02:00").unwrap();
        assert!(w.covers(at(2026, 12, 7, 1, 0)));
        assert!(w.covers(at(2026, 12, 6, 22, 30)));
        assert!(!w.covers(at(2026, 12, 6, 21, 0)));
    }

    #[test]
    fn daily_window_crosses_midnight() {
        let w = FreezeWindow::parse("22:00-06:00").unwrap();
        assert!(w.covers(at(2026, 12, 3, 23, 0)));
        assert!(w.covers(at(2026, 12, 3, 3, 0)));
        assert!(!w.covers(at(2026, 12, 3, 12, 0)));
    }

    #[test]
    fn bad_windows_say_how_to_write_them() {
        for bad in [
            "Sat",
            "Sat 00:00-06:00",
            "Xyz 00:00-Mon 01:00",
            "25:00-01:00",
        ] {
            assert!(FreezeWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_malformed_pipeline_names_the_field() {
        let p: Pipeline = serde_yaml::from_str(
            "environments:\n- {name: Staging, namespace: s, kubeContext: s}\n",
        )
        .unwrap();
        assert!(
            p.check()
                .unwrap_err()
                .to_string()
                .contains("environments[0].name")
        );
        let p: Pipeline = serde_yaml::from_str(
            "environments:\n- {name: s, namespace: s, kubeContext: s, soak: soon}\n",
        )
        .unwrap();
        assert!(p.check().unwrap_err().to_string().contains("soak"));
    }
}
