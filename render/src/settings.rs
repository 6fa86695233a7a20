//! Operator-wide settings that shape rendered objects, and how to read them from the chart's
//! values, so that an offline render uses exactly what the installed operator uses.

use serde_json::Value;

/// Repository of the worker image when nothing else is set.
pub const DEFAULT_WORKER_REPOSITORY: &str = "ghcr.io/millrace-dev/millrace-worker";

/// The worker image the operator uses when run with no flags: the chart's default.
pub fn default_worker_image() -> String {
    format!("{DEFAULT_WORKER_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// Operator-wide settings that shape the rendered objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderSettings {
    /// Image of `millrace-worker`.
    pub worker_image: String,
}

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            worker_image: default_worker_image(),
        }
    }
}

impl RenderSettings {
    /// Settings from Helm values in the shape of `charts/millrace/values.yaml`. Keys that do
    /// not shape rendered objects are ignored; a key of the wrong type is an error naming it.
    ///
    /// `workerImage.repository` and `workerImage.tag` give the worker image; an empty tag means
    /// the chart's appVersion, which is this release's version.
    pub fn from_chart_values(values: &Value) -> Result<Self, millrace_crds::FieldError> {
        let mut settings = Self::default();
        let Some(image) = values.get("workerImage") else {
            return Ok(settings);
        };
        let text = |key: &str| -> Result<Option<String>, millrace_crds::FieldError> {
            match image.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(millrace_crds::FieldError::new(
                    format!("workerImage.{key}"),
                    format!("must be a string, not {other}"),
                )),
            }
        };
        let repository = text("repository")?
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_WORKER_REPOSITORY.to_string());
        let tag = text("tag")?
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        settings.worker_image = format!("{repository}:{tag}");
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chart_values_give_the_worker_image() {
        let chart: Value =
            serde_yaml::from_str(include_str!("../../charts/millrace/values.yaml")).unwrap();
        assert_eq!(
            RenderSettings::from_chart_values(&chart).unwrap(),
            RenderSettings::default()
        );
        let custom =
            json!({"workerImage": {"repository": "registry.local/worker", "tag": "2.0.1"}});
        assert_eq!(
            RenderSettings::from_chart_values(&custom)
                .unwrap()
                .worker_image,
            "registry.local/worker:2.0.1"
        );
        let bad = json!({"workerImage": {"tag": 3}});
        assert_eq!(
            RenderSettings::from_chart_values(&bad).unwrap_err().field,
            "workerImage.tag"
        );
    }
}
