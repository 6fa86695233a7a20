//! PartnerConnection: resolve secret references (without copying them) and probe reachability.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use millrace_crds::conditions::{ConditionStatus, set_condition};
use millrace_crds::connection::{PartnerConnection, ProbeResult, condition, reason};
use millrace_render::references::connection_names;

use super::{apply_pause, measured, now, write_status};
use crate::context::{Context, ProbeMemo};
use crate::error::{Error, Result};
use crate::secrets;
use millrace_broker::tls::{AmqpConnector, HttpTls, TlsError, TlsOptions, verification_hint};

/// Reconciles one PartnerConnection.
pub async fn reconcile(conn: Arc<PartnerConnection>, ctx: Arc<Context>) -> Result<Action> {
    measured(&ctx, conn.as_ref(), apply(&conn, &ctx)).await
}

/// Where a PartnerConnection declares TLS settings.
const AMQP_TLS_FIELD: &str = "spec.amqp.tls";
const HTTP_TLS_FIELD: &str = "spec.http.tls";

async fn probe_http(
    url: &str,
    method: &str,
    timeout: Duration,
    tls: &HttpTls,
) -> Result<u64, String> {
    let client = tls
        .apply(reqwest::Client::builder().timeout(timeout))
        .build()
        .map_err(|e| e.to_string())?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let response = client
        .request(method, tls.url(url))
        .send()
        .await
        .map_err(|e| match verification_hint(&e, HTTP_TLS_FIELD) {
            Some(hint) => format!("{url}: {hint}"),
            None => format!("{url}: {e}"),
        })?;
    let elapsed = start.elapsed().as_millis() as u64;
    if response.status().is_server_error() {
        return Err(format!("{url} answered {}", response.status()));
    }
    Ok(elapsed)
}

async fn apply(conn: &PartnerConnection, ctx: &Context) -> Result<Action> {
    let ns = conn
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = conn.name_any();
    let api: Api<PartnerConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let old = conn.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = conn.metadata.generation;
    let t = now();
    if apply_pause(&conn.metadata, &mut status) {
        write_status(ctx, &api, conn, &old, &status).await?;
        return Ok(Action::await_change());
    }

    let interval = conn
        .spec
        .probe
        .as_ref()
        .and_then(|p| p.interval.as_ref())
        .and_then(|i| i.to_std().ok())
        .unwrap_or(ctx.settings.probe_interval)
        .max(Duration::from_secs(1));

    // Credentials: read each referenced key into memory, to prove it exists. Never stored.
    let mut amqp_uri = None;
    let mut credential_error = None;
    if let Some(a) = &conn.spec.amqp {
        match secrets::read(&ctx.client, &ns, &a.uri_secret_ref).await {
            Ok(uri) => amqp_uri = Some(uri),
            Err(e) => credential_error = Some((e.reason(), format!("spec.amqp.uriSecretRef: {e}"))),
        }
    }
    // TLS settings: the CA bundle is read like a credential (a missing one does not resolve).
    let (tls_field, tls_spec) = match (&conn.spec.amqp, &conn.spec.http) {
        (Some(a), _) => (
            AMQP_TLS_FIELD,
            a.tls.as_ref().map(|t| (&t.ca_secret_ref, &t.server_name)),
        ),
        (None, Some(h)) => (
            HTTP_TLS_FIELD,
            h.tls.as_ref().map(|t| (&t.ca_secret_ref, &t.server_name)),
        ),
        (None, None) => (AMQP_TLS_FIELD, None),
    };
    let mut tls = TlsOptions::default();
    if let Some((ca, server_name)) = tls_spec {
        tls.server_name = server_name.clone();
        if let Some(ca) = ca {
            match secrets::read(&ctx.client, &ns, ca).await {
                Ok(pem) => tls.ca_pem = Some(pem),
                Err(e) => {
                    credential_error = Some((e.reason(), format!("{tls_field}.caSecretRef: {e}")));
                }
            }
        }
    }
    if let Some(secret) = conn
        .spec
        .http
        .as_ref()
        .and_then(|h| h.auth.as_ref())
        .and_then(|a| a.secret_ref.as_ref())
        && let Err(e) = secrets::read(&ctx.client, &ns, secret).await
    {
        credential_error = Some((e.reason(), format!("spec.http.auth.secretRef: {e}")));
    }
    let (reason, message) = match &credential_error {
        Some((r, m)) => (*r, m.clone()),
        None => (
            reason::RESOLVED,
            "every referenced Secret key exists".to_string(),
        ),
    };
    set_condition(
        &mut status.conditions,
        condition::CREDENTIALS_RESOLVED,
        ConditionStatus::from_bool(credential_error.is_none()),
        reason,
        message,
        generation,
        t.clone(),
    );

    // TLS settings that cannot be used are reported as such, and the endpoint is not probed.
    let tls_error = |e: TlsError| {
        let secret = match (&e, tls_spec.and_then(|(ca, _)| ca.as_ref())) {
            (TlsError::NoCertificate | TlsError::InvalidCertificate { .. }, Some(ca)) => {
                format!(" (Secret {:?} key {:?})", ca.name, ca.key)
            }
            _ => String::new(),
        };
        format!(
            "PartnerConnection {ns}/{name}: {}{secret} {e}",
            e.field(tls_field)
        )
    };
    let mut amqp_broker = None;
    let mut http_tls = None;
    let mut tls_invalid = None;
    if let Some(uri) = &amqp_uri {
        match AmqpConnector::new(uri, &tls) {
            Ok(c) => amqp_broker = Some(c),
            Err(e) => tls_invalid = Some(tls_error(e)),
        }
        // The flow controller's topology connections to this broker use the same settings.
        ctx.brokers.set_tls(uri, tls.clone());
    }
    if let Some(h) = &conn.spec.http {
        match HttpTls::new(&h.base_url, &tls) {
            Ok(t) => http_tls = Some((h, t)),
            Err(e) => tls_invalid = Some(tls_error(e)),
        }
    }

    // Reachability: probe when due; otherwise reuse the remembered outcome.
    let key = (ns.clone(), name.clone());
    let memo = ctx.probes.lock().await.get(&key).cloned();
    let due = memo.as_ref().is_none_or(|m| m.at.elapsed() >= interval)
        || status.observed_generation != generation;
    let outcome = if let Some(e) = &tls_invalid {
        Err(e.clone())
    } else if !due {
        memo.map(|m| m.outcome)
            .unwrap_or_else(|| Err("not probed yet".into()))
    } else {
        let outcome = if let Some((h, tls)) = &http_tls {
            let probe = conn.spec.probe.as_ref().and_then(|p| p.http.clone());
            let (method, path) = probe
                .map(|p| (p.method, p.path))
                .unwrap_or_else(|| ("GET".into(), "/".into()));
            let url = format!("{}{}", h.base_url.trim_end_matches('/'), path);
            let timeout = h
                .timeout
                .as_ref()
                .and_then(|t| t.to_std().ok())
                .unwrap_or(Duration::from_secs(10));
            probe_http(&url, &method, timeout, tls).await
        } else if let Some(broker) = &amqp_broker {
            crate::broker::probe(broker)
                .await
                .map(|d| d.as_millis() as u64)
                .map_err(|e| e.to_string())
        } else {
            Err("credentials do not resolve, so the broker cannot be probed".to_string())
        };
        ctx.probes.lock().await.insert(
            key,
            ProbeMemo {
                at: Instant::now(),
                outcome: outcome.clone(),
            },
        );
        outcome
    };
    let reachable = outcome.is_ok();
    let unreachable = if tls_invalid.is_some() {
        reason::TLS_INVALID
    } else {
        reason::UNREACHABLE
    };
    let (reason, message) = match &outcome {
        Ok(ms) => (
            reason::REACHABLE,
            format!("the endpoint answered in {ms} ms"),
        ),
        Err(e) => (unreachable, e.clone()),
    };
    // Keep the message stable between probes so an unchanged verdict writes nothing.
    let message = if reachable {
        "the endpoint answers".to_string()
    } else {
        message
    };
    set_condition(
        &mut status.conditions,
        condition::REACHABLE,
        ConditionStatus::from_bool(reachable),
        reason,
        message,
        generation,
        t.clone(),
    );
    // lastProbe changes only with the verdict, so steady probing makes no API writes.
    let error = outcome.as_ref().err().cloned();
    if old
        .last_probe
        .as_ref()
        .map(|p| (p.error.clone(), p.latency_ms.is_some()))
        != Some((error.clone(), reachable))
    {
        status.last_probe = Some(ProbeResult {
            time: t.clone(),
            latency_ms: outcome.as_ref().ok().copied(),
            error,
        });
    }

    let ready = credential_error.is_none() && reachable;
    let (reason, message) = if ready {
        (
            reason::READY,
            "credentials resolve and the endpoint is reachable".to_string(),
        )
    } else if let Some((r, m)) = &credential_error {
        (*r, m.clone())
    } else {
        (unreachable, outcome.err().unwrap_or_default())
    };
    set_condition(
        &mut status.conditions,
        condition::READY,
        ConditionStatus::from_bool(ready),
        reason,
        message,
        generation,
        t,
    );
    status.observed_generation = generation;
    let mut used_by: Vec<String> = ctx
        .flows
        .state()
        .iter()
        .filter(|f| f.namespace().as_deref() == Some(ns.as_str()))
        .filter(|f| connection_names(&f.spec).contains(&name))
        .map(|f| f.name_any())
        .collect();
    used_by.sort();
    status.used_by = used_by;

    write_status(ctx, &api, conn, &old, &status).await?;
    Ok(Action::requeue(interval))
}
