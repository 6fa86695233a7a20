//! The judgement of one flow: validate what needs no other object, dereference through a
//! [`Catalog`], then render. The operator turns the verdicts into conditions and applies the
//! rendered objects; the CLI prints the verdicts and the objects. Both call [`judge_flow`].

use std::collections::BTreeMap;

use millrace_crds::FieldError;
use millrace_crds::connection::PartnerConnection;
use millrace_crds::flow::{ContractRef, IntegrationFlow, IntegrationFlowSpec, reason};

use crate::jq;
use crate::objects::{RenderedFlow, render};
use crate::references::{
    Catalog, INGRESS_SECRETS_ANNOTATION, LOOKUP_LABEL, Readiness, allowed_secret_names,
    connection_fields, connection_names, flow_secret_ref,
};
use crate::settings::RenderSettings;
use crate::worker_config::{FlowInputs, ResolvedContract};

/// The verdict behind one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the condition holds.
    pub ok: bool,
    /// CamelCase reason, one of [`millrace_crds::flow::reason`].
    pub reason: &'static str,
    /// The spec field at fault, when one is.
    pub field: Option<String>,
    /// What is wrong and how to fix it, or what holds.
    pub message: String,
}

impl Verdict {
    /// A condition that holds.
    pub fn ok(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            reason,
            field: None,
            message: message.into(),
        }
    }

    /// A condition that fails because of `field`.
    pub fn fail(reason: &'static str, field: Option<String>, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            reason,
            field,
            message: message.into(),
        }
    }

    /// A condition that waits for an earlier one.
    pub fn pending(upstream: &str) -> Self {
        Self::fail(reason::BLOCKED, None, format!("waiting for {upstream}"))
    }

    /// The condition's message: `field: message`, or the message alone.
    pub fn condition_message(&self) -> String {
        match &self.field {
            Some(f) => format!("{f}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// True when the verdict fails only because a referenced object is absent.
    pub fn is_missing_reference(&self) -> bool {
        !self.ok
            && matches!(
                self.reason,
                reason::CONTRACT_NOT_FOUND
                    | reason::CONNECTION_NOT_FOUND
                    | reason::LOOKUP_NOT_FOUND
            )
    }
}

/// Everything decided about a flow before anything is applied.
#[derive(Clone, Debug)]
pub struct FlowJudgement {
    /// The `Accepted` verdict: jq compiles, args and lookups fit, references fit their use.
    pub accepted: Verdict,
    /// The `ContractsResolved` verdict.
    pub contracts: Verdict,
    /// The `ConnectionsReady` verdict. Offline, where readiness is unknown, it holds when every
    /// connection exists.
    pub connections: Verdict,
    /// The input contract, when resolved.
    pub input: Option<ResolvedContract>,
    /// The output contract, when the transform declares one and it resolved.
    pub output: Option<ResolvedContract>,
    /// What the operator applies, when the flow could be rendered.
    pub rendered: Option<RenderedFlow>,
}

impl FlowJudgement {
    /// The verdicts in condition order.
    pub fn verdicts(&self) -> [&Verdict; 3] {
        [&self.accepted, &self.contracts, &self.connections]
    }
}

/// Checks every jq program of the spec with the variables the worker provides, and that no
/// arg has a lookup's name. Returns the field and the problem of the first that fails.
pub fn check_programs(spec: &IntegrationFlowSpec) -> Result<(), Verdict> {
    let mut vars: Vec<String> = Vec::new();
    if let Some(t) = &spec.transform {
        vars.extend(t.lookups.iter().map(|l| l.name.clone()));
        for name in t.args.keys() {
            if let Some(i) = t.lookups.iter().position(|l| &l.name == name) {
                return Err(Verdict::fail(
                    reason::ARG_SHADOWS_LOOKUP,
                    Some(format!("spec.transform.args.{name}")),
                    format!(
                        "has the name of spec.transform.lookups[{i}], so ${name} would mean two things; rename the arg or the lookup"
                    ),
                ));
            }
            vars.push(name.clone());
        }
    }
    let mut programs: Vec<(String, &str)> = Vec::new();
    if let Some(p) = spec.transform.as_ref().and_then(|t| t.jq.as_deref()) {
        programs.push(("spec.transform.jq".into(), p));
    }
    for (i, r) in spec.routes.iter().enumerate() {
        if let Some(w) = r.when.as_deref() {
            programs.push((format!("spec.routes[{i}].when"), w));
        }
    }
    if let Some(d) = &spec.delivery {
        if let Some(i) = &d.idempotency {
            programs.push(("spec.delivery.idempotency.key".into(), &i.key));
        }
        if let Some(o) = &d.ordering {
            programs.push(("spec.delivery.ordering.key".into(), &o.key));
        }
    }
    for (field, program) in programs {
        // Keys and predicates see the same variables as the transform.
        jq::check(program, &vars).map_err(|e| Verdict::fail(reason::INVALID_JQ, Some(field), e))?;
    }
    Ok(())
}

/// Checks that every Secret the flow names itself is one its connections name. A flow author
/// could otherwise hand any Secret of the namespace to the workers, and through them to a
/// destination. Holds while a connection is not in the catalog: what it names is not known yet,
/// and a flow with a missing connection is not rendered anyway.
pub fn check_secret_refs(flow: &IntegrationFlow, catalog: &Catalog) -> Result<(), Verdict> {
    let spec = &flow.spec;
    let Some((secret, field)) = flow_secret_ref(spec) else {
        return Ok(());
    };
    let Some(allowed) = allowed_secret_names(spec, catalog) else {
        return Ok(());
    };
    if allowed.contains(&secret.name) {
        return Ok(());
    }
    let flow_name = flow.metadata.name.as_deref().unwrap_or_default();
    let connections = connection_names(spec);
    // The flow's queues always live on its broker connection: the natural one to lend the key.
    let grantor = spec
        .broker
        .as_ref()
        .map(|b| b.connection.clone())
        .or_else(|| connections.first().cloned())
        .unwrap_or_default();
    Err(Verdict::fail(
        reason::SECRET_NOT_ALLOWED,
        Some(format!("{field}.name")),
        format!(
            "IntegrationFlow {flow_name:?} may reference only Secrets that its PartnerConnections ({}) name, and none names Secret {:?}; name it in PartnerConnection {grantor:?} (annotation {INGRESS_SECRETS_ANNOTATION}: {}), or drop the reference",
            connections.join(", "),
            secret.name,
            secret.name,
        ),
    ))
}

/// Resolves a contract reference through the catalog: the pinned version when it is accepted,
/// else the latest accepted version.
pub fn resolve_contract(
    catalog: &Catalog,
    r: &ContractRef,
    field: &str,
) -> Result<ResolvedContract, Verdict> {
    let fail = |reason, message: String| Verdict::fail(reason, Some(field.to_string()), message);
    let Some(entry) = catalog.contracts.get(&r.name) else {
        return Err(fail(
            reason::CONTRACT_NOT_FOUND,
            format!(
                "EventContract {:?} not found in namespace {}; create it or fix the name",
                r.name, catalog.namespace
            ),
        ));
    };
    let version = match r.version {
        Some(v) => {
            if !entry.versions.iter().any(|s| s.version == v && s.accepted) {
                let why = entry
                    .versions
                    .iter()
                    .find(|s| s.version == v)
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| "it is not (yet) accepted".into());
                return Err(fail(
                    reason::CONTRACT_VERSION_NOT_ACCEPTED,
                    format!(
                        "EventContract {:?} version {v} cannot be used: {why}",
                        r.name
                    ),
                ));
            }
            v
        }
        None => entry.latest_accepted.ok_or_else(|| {
            fail(
                reason::CONTRACT_NOT_READY,
                format!("EventContract {:?} has no accepted version yet", r.name),
            )
        })?,
    };
    let spec_version = entry.contract.spec.version(version).ok_or_else(|| {
        fail(
            reason::CONTRACT_VERSION_NOT_FOUND,
            format!("EventContract {:?} has no version {version}", r.name),
        )
    })?;
    Ok(ResolvedContract {
        name: r.name.clone(),
        version,
        event_type: entry.contract.spec.type_.clone(),
        schema: spec_version.schema.clone(),
    })
}

/// Judges a flow against the objects in `catalog` and renders it when it can.
pub fn judge_flow(
    flow: &IntegrationFlow,
    catalog: &Catalog,
    settings: &RenderSettings,
) -> FlowJudgement {
    let spec = &flow.spec;
    let ns = &catalog.namespace;

    // 1. What needs no other object.
    let mut accepted = match check_programs(spec) {
        Ok(()) => Verdict::ok(
            reason::VALID,
            "the spec is valid and every jq program compiles",
        ),
        Err(v) => v,
    };

    // 2. Contracts.
    let mut contracts = Verdict::ok(reason::RESOLVED, "");
    let input = match resolve_contract(catalog, &spec.contract, "spec.contract") {
        Ok(c) => Some(c),
        Err(v) => {
            contracts = v;
            None
        }
    };
    let output = match spec
        .transform
        .as_ref()
        .and_then(|t| t.output_contract.as_ref())
    {
        Some(r) => match resolve_contract(catalog, r, "spec.transform.outputContract") {
            Ok(c) => Some(c),
            Err(v) => {
                if contracts.ok {
                    contracts = v;
                }
                None
            }
        },
        None => None,
    };
    if contracts.ok {
        let c = input
            .as_ref()
            .map(|c| format!("{}@v{}", c.name, c.version))
            .unwrap_or_default();
        contracts.message = match &output {
            Some(o) => format!("input {c}, output {}@v{}", o.name, o.version),
            None => format!("input {c}"),
        };
    }

    // 3. Lookups.
    let mut lookups = BTreeMap::new();
    if let Some(t) = &spec.transform {
        for (i, l) in t.lookups.iter().enumerate() {
            match catalog.config_maps.get(&l.config_map_ref.name) {
                Some(data) => {
                    lookups.insert(l.name.clone(), data.clone());
                }
                None if accepted.ok => {
                    accepted = Verdict::fail(
                        reason::LOOKUP_NOT_FOUND,
                        Some(format!("spec.transform.lookups[{i}].configMapRef")),
                        format!(
                            "ConfigMap {:?} not found in namespace {ns}; create it or fix the name",
                            l.config_map_ref.name
                        ),
                    );
                }
                None => {}
            }
        }
    }

    // 4. Secrets: only those the connections name.
    if accepted.ok
        && let Err(v) = check_secret_refs(flow, catalog)
    {
        accepted = v;
    }
    // Still accepted, but worth saying: an unlabelled lookup's edits wait for the re-check.
    let unlabelled: Vec<String> = spec
        .transform
        .iter()
        .flat_map(|t| &t.lookups)
        .map(|l| &l.config_map_ref.name)
        .filter(|n| catalog.unlabelled_lookups.contains(*n))
        .map(|n| format!("{n:?}"))
        .collect();
    if accepted.ok && !unlabelled.is_empty() {
        accepted.message = format!(
            "{}; lookup ConfigMap {} has no label {LOOKUP_LABEL}, so its edits reach this flow only at the periodic re-check: label it to have them applied at once",
            accepted.message,
            unlabelled.join(", ")
        );
    }

    // 5. Connections: a missing one outranks one that is not Ready.
    let mut connections: BTreeMap<String, &PartnerConnection> = BTreeMap::new();
    let mut conns = Verdict::ok(reason::CONNECTIONS_READY, "every connection is Ready");
    let mut unjudged = false;
    for (name, field) in connection_fields(spec) {
        match catalog.connections.get(&name) {
            Some(entry) => {
                match &entry.readiness {
                    Readiness::Ready => {}
                    Readiness::Unjudged => unjudged = true,
                    Readiness::NotReady(why) if conns.ok => {
                        conns = Verdict::fail(
                            reason::CONNECTION_NOT_READY,
                            None,
                            format!("PartnerConnection {name:?} is not Ready: {why}"),
                        );
                    }
                    Readiness::NotReady(_) => {}
                }
                connections.insert(name, &entry.connection);
            }
            None if conns.reason != reason::CONNECTION_NOT_FOUND => {
                conns = Verdict::fail(
                    reason::CONNECTION_NOT_FOUND,
                    Some(field),
                    format!(
                        "PartnerConnection {name:?} not found in namespace {ns}; create it or fix the name"
                    ),
                );
            }
            None => {}
        }
    }
    if conns.ok && unjudged {
        conns.message = "every connection exists (readiness is judged in the cluster)".into();
    }

    // 6. Render, when everything it needs is known.
    let mut rendered = None;
    if accepted.ok
        && conns.reason != reason::CONNECTION_NOT_FOUND
        && let Some(contract) = input.clone()
    {
        let inputs = FlowInputs {
            flow,
            contract,
            output_contract: output.clone(),
            connections,
            lookups,
            secret_versions: catalog.secret_versions.as_ref(),
        };
        match render(&inputs, settings) {
            Ok(r) => rendered = Some(r),
            Err(FieldError { field, message }) => {
                accepted = Verdict::fail(reason::INVALID_REFERENCE, Some(field), message)
            }
        }
    }

    FlowJudgement {
        accepted,
        contracts,
        connections: conns,
        input,
        output,
        rendered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::references::{ConnectionEntry, ContractEntry, INGRESS_SECRETS_ANNOTATION};
    use millrace_crds::contract::EventContract;

    fn parse<K: serde::de::DeserializeOwned>(yaml: &str) -> K {
        serde_yaml::from_str(yaml).unwrap()
    }

    const BUS: &str = "metadata: {name: bus}\nspec: {system: Other, amqp: {uriSecretRef: {name: bus-amqp, key: uri}}}";
    const ERP: &str = "metadata: {name: erp}\nspec: {system: ERP, http: {baseUrl: https://erp.example.com, auth: {type: Bearer, secretRef: {name: erp-token, key: token}}}}";

    /// An HTTP-ingress flow whose key is Secret `secret`, with its broker and an HTTP route.
    fn ingress_flow(secret: &str) -> IntegrationFlow {
        parse(&format!(
            r#"apiVersion: millrace.dev/v1alpha1
kind: IntegrationFlow
metadata: {{name: orders, namespace: plant}}
spec:
  version: 1.0.0
  source: {{http: {{path: /ingest/orders, auth: {{type: HmacSha256, secretRef: {{name: {secret}, key: key}}}}}}}}
  broker: {{connection: bus}}
  contract: {{name: orders}}
  routes:
    - name: erp
      destination: {{connection: erp, http: {{path: /orders}}}}
"#
        ))
    }

    fn catalog(connections: &[&str]) -> Catalog {
        let mut catalog = Catalog::new("plant");
        let contract: EventContract = parse(
            "metadata: {name: orders}\nspec: {type: com.acme.order.v1, versions: [{version: 1, schema: {type: object}}]}",
        );
        catalog
            .contracts
            .insert("orders".into(), ContractEntry::judged(contract));
        for yaml in connections {
            let c: PartnerConnection = parse(yaml);
            catalog.connections.insert(
                c.metadata.name.clone().unwrap(),
                ConnectionEntry::unjudged(c),
            );
        }
        catalog
    }

    fn settings() -> RenderSettings {
        RenderSettings {
            worker_image: "worker:1".into(),
        }
    }

    #[test]
    fn a_flow_may_name_only_secrets_its_connections_name() {
        let lent = format!(
            "metadata: {{name: bus, annotations: {{{INGRESS_SECRETS_ANNOTATION}: 'other, orders-hmac'}}}}\nspec: {{system: Other, amqp: {{uriSecretRef: {{name: bus-amqp, key: uri}}}}}}"
        );
        let cases: [(&str, &str, &[&str], Option<&str>); 6] = [
            (
                "any Secret of the namespace",
                "db-password",
                &[BUS, ERP],
                Some(reason::SECRET_NOT_ALLOWED),
            ),
            (
                "a Secret a connection lends",
                "orders-hmac",
                &[&lent, ERP],
                None,
            ),
            (
                "a Secret of a connection's spec",
                "erp-token",
                &[BUS, ERP],
                None,
            ),
            (
                "lent by a connection the flow does not use",
                "orders-hmac",
                &[BUS, ERP],
                Some(reason::SECRET_NOT_ALLOWED),
            ),
            // What a missing connection names is unknown; ConnectionsReady reports it.
            ("a connection is missing", "db-password", &[BUS], None),
            ("nothing but the spec's own", "bus-amqp", &[BUS, ERP], None),
        ];
        for (what, secret, connections, refused) in cases {
            let flow = ingress_flow(secret);
            let j = judge_flow(&flow, &catalog(connections), &settings());
            match refused {
                Some(r) => {
                    assert_eq!(j.accepted.reason, r, "{what}: {:?}", j.accepted);
                    assert!(!j.accepted.ok && j.rendered.is_none(), "{what}");
                    assert_eq!(
                        j.accepted.field.as_deref(),
                        Some("spec.source.http.auth.secretRef.name"),
                        "{what}"
                    );
                    let m = &j.accepted.message;
                    for needle in [
                        "\"orders\"",
                        "\"db-password\"",
                        "PartnerConnection \"bus\"",
                        INGRESS_SECRETS_ANNOTATION,
                        "drop the reference",
                    ] {
                        assert!(
                            m.contains(needle.replace("db-password", secret).as_str()),
                            "{what}: {needle} not in {m}"
                        );
                    }
                }
                None => assert!(j.accepted.ok, "{what}: {:?}", j.accepted),
            }
        }
    }

    #[test]
    fn an_unlabelled_lookup_is_accepted_with_a_note() {
        let mut flow = ingress_flow("erp-token");
        flow.spec.transform = Some(parse(
            "lookups: [{name: plants, configMapRef: {name: plant-codes}}]",
        ));
        let mut catalog = catalog(&[BUS, ERP]);
        catalog
            .config_maps
            .insert("plant-codes".into(), BTreeMap::new());
        let j = judge_flow(&flow, &catalog, &settings());
        assert!(
            j.accepted.ok && !j.accepted.message.contains(LOOKUP_LABEL),
            "{:?}",
            j.accepted
        );
        catalog.unlabelled_lookups.insert("plant-codes".into());
        let j = judge_flow(&flow, &catalog, &settings());
        assert!(j.accepted.ok, "{:?}", j.accepted);
        assert!(
            j.accepted.message.contains("\"plant-codes\"")
                && j.accepted.message.contains(LOOKUP_LABEL),
            "{}",
            j.accepted.message
        );
    }
}
