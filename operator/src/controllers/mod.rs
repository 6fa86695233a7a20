//! One controller per kind, plus the helpers they share: server-side apply that skips unchanged
//! objects, status patches, and Events.

pub mod connection;
pub mod contract;
pub mod flow;

use std::fmt::Debug;
use std::future::Future;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use millrace_crds::conditions::{ConditionStatus, HasConditions, set_condition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::Result;
use millrace_render::APPLIED_HASH_ANNOTATION;

/// Field manager of every write the operator makes.
pub const MANAGER: &str = "millrace-operator";

/// Applies `desired` with server-side apply unless the live object already holds it: the same
/// applied-hash, and every field `desired` sets with the same value. So a hand edit that keeps
/// the annotation (`kubectl edit` of a ConfigMap's data) is repaired too. Returns true when a
/// write was made.
pub async fn apply_if_changed<K>(ctx: &Context, api: &Api<K>, desired: &K) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = desired.name_any();
    let want = desired.annotations().get(APPLIED_HASH_ANNOTATION);
    let mut body = serde_json::to_value(desired)?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    if let Some(live) = api.get_opt(&name).await?
        && live.annotations().get(APPLIED_HASH_ANNOTATION) == want
        && want.is_some()
        && covers(&serde_json::to_value(&live)?, &body)
    {
        return Ok(false);
    }
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    ctx.metrics.write(&K::kind(&()), "apply");
    Ok(true)
}

/// True when `live` holds every field `want` sets, with the same value. The apiserver adds
/// defaults and server fields, so `live` may hold more; lists must have the same length and
/// each item must be covered; an empty list or map in `want` matches one that is absent.
pub fn covers(live: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, want) {
        (_, Value::Null) => true,
        (Value::Null, Value::Array(w)) => w.is_empty(),
        (Value::Null, Value::Object(w)) => w.is_empty(),
        (Value::Object(l), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| covers(l.get(k).unwrap_or(&Value::Null), v)),
        (Value::Array(l), Value::Array(w)) => {
            l.len() == w.len() && l.iter().zip(w).all(|(l, w)| covers(l, w))
        }
        (l, w) => l == w,
    }
}

/// Writes `status` through the status subresource with server-side apply.
pub async fn patch_status<K, S>(ctx: &Context, api: &Api<K>, name: &str, status: &S) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    S: Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    ctx.metrics
        .write(&format!("{}/status", K::kind(&())), "apply");
    Ok(())
}

/// Publishes an Event about `obj`. Failures are logged, never fatal.
pub async fn publish<K>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        Ok(()) => ctx.metrics.write("Event", "create"),
        Err(e) => tracing::warn!(error = %e, reason, "publishing an Event failed"),
    }
}

/// Publishes one Event per condition whose status changed between `before` and `after`.
/// A condition turning False is a Warning named by its reason; one turning True is Normal.
pub async fn publish_transitions<K>(
    ctx: &Context,
    obj: &K,
    before: &[Condition],
    after: &[Condition],
) where
    K: Resource<DynamicType = ()>,
{
    for c in after {
        let old = before.iter().find(|o| o.type_ == c.type_);
        let changed = match old {
            Some(o) => o.status != c.status || (c.status == "False" && o.reason != c.reason),
            None => c.status != "Unknown",
        };
        if !changed {
            continue;
        }
        let warning = c.status == "False";
        let action = format!("Set{}", c.type_);
        publish(
            ctx,
            obj,
            warning,
            &c.reason,
            &action,
            format!("{} is {}: {}", c.type_, c.status, c.message),
        )
        .await;
    }
}

/// The key of an object in the error backoff: `Kind/namespace/name`.
pub fn backoff_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Counts and times one reconcile pass of `obj`; a pass that succeeds resets its error backoff.
pub async fn measured<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    pass: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    let started = std::time::Instant::now();
    let labels = crate::metrics::KindLabels {
        kind: K::kind(&()).into(),
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let result = pass.await;
    ctx.metrics
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.backoff.succeeded(&backoff_key(obj));
    }
    result
}

/// Writes `new` when it differs from `old`, and publishes an Event per changed condition.
pub async fn write_status<K, S>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    old: &S,
    new: &S,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    S: HasConditions + PartialEq + Serialize,
{
    if new != old {
        patch_status(ctx, api, &obj.name_any(), new).await?;
        publish_transitions(ctx, obj, old.conditions(), new.conditions()).await;
    }
    Ok(())
}

/// Condition shown while the pause annotation is set.
pub const PAUSED_CONDITION: &str = "ReconciliationPaused";

/// Applies the pause annotation to `status`: while it is set, shows `ReconciliationPaused` and
/// returns true (the caller writes status and stops); once removed, drops the condition.
pub fn apply_pause<S: HasConditions>(meta: &ObjectMeta, status: &mut S) -> bool {
    if is_paused(meta) {
        set_condition(
            status.conditions_mut(),
            PAUSED_CONDITION,
            ConditionStatus::True,
            "Paused",
            "the millrace.dev/paused annotation is set; nothing is reconciled until it is removed",
            meta.generation,
            now(),
        );
        true
    } else {
        status
            .conditions_mut()
            .retain(|c| c.type_ != PAUSED_CONDITION);
        false
    }
}

/// True when the pause annotation is set to "true".
pub fn is_paused(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(millrace_crds::PAUSED_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// The current time as a Kubernetes timestamp.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::covers;
    use serde_json::json;

    #[test]
    fn live_objects_with_defaults_cover_what_was_applied() {
        let want = json!({"data": {"a": "1"}, "spec": {"ports": [{"port": 80}], "env": []}});
        let live = json!({"data": {"a": "1"}, "metadata": {"uid": "x"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}});
        assert!(covers(&live, &want));
        let edited = json!({"data": {"a": "2"}, "spec": {"ports": [{"port": 80}]}});
        assert!(!covers(&edited, &want), "a changed value");
        let extra = json!({"data": {"a": "1"}, "spec": {"ports": [{"port": 80}, {"port": 81}]}});
        assert!(!covers(&extra, &want), "a list item added by hand");
        let removed = json!({"spec": {"ports": [{"port": 80}]}});
        assert!(!covers(&removed, &want), "a field removed by hand");
    }
}
