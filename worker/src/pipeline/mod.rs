//! The per-message pipeline: envelope → validate(contract) → transform(jq) →
//! validate(output contract) → route(jq predicates).
//!
//! Everything here is pure and synchronous; delivery, retries and acks live in
//! [`crate::process`]. A [`CompiledFlow`] is built once per config: schemas and jq programs are
//! compiled there, so a bad config is refused before any message is touched.

pub mod envelope;
pub mod projection;
pub mod reason;
pub mod transform;
pub mod validate;

use std::collections::BTreeMap;

use millrace_crds::FieldError;
use millrace_crds::naming::FlowNames;
use millrace_crds::worker_config::{FlowConfig, RouteConfig, SourceConfig};
use millrace_topology::TopologyPlan;
use serde_json::Value;

use envelope::Envelope;
pub use reason::{DeadLetterReason, Rejection};
use transform::{JqProgram, JqVariables, truthy};
use validate::ContractValidator;

/// One received message as the pipeline sees it, whatever carried it: the body, its declared
/// content type and its envelope (see [`crate::amqp::message`] for AMQP).
#[derive(Clone, Debug)]
pub struct Message<'a> {
    /// The raw body.
    pub body: &'a [u8],
    /// The declared content type, if any.
    pub content_type: Option<&'a str>,
    /// The envelope read from the message; its id may still be empty.
    pub envelope: Envelope,
}

/// One route, compiled.
pub struct CompiledRoute {
    /// The route as configured.
    pub config: RouteConfig,
    /// Predicate; `None` means always.
    pub when: Option<JqProgram>,
}

/// One flow, compiled: validators and jq programs ready to run.
pub struct CompiledFlow {
    /// The flow as configured.
    pub config: FlowConfig,
    /// Derived RabbitMQ names.
    pub names: FlowNames,
    /// Its topology.
    pub plan: TopologyPlan,
    contract: ContractValidator,
    transform: Option<JqProgram>,
    output_contract: Option<ContractValidator>,
    output_event_type: Option<String>,
    output_dataschema: Option<String>,
    vars: JqVariables,
    /// Routes in spec order.
    pub routes: Vec<CompiledRoute>,
    idempotency: Option<JqProgram>,
    ordering: Option<JqProgram>,
    /// Largest accepted body.
    pub max_message_bytes: usize,
    /// See [`CompiledFlow::may_loop`].
    may_loop: bool,
}

/// An event that went through the pipeline and is ready for delivery.
#[derive(Debug, Clone)]
pub struct Processed {
    /// Envelope of the delivered event (its id is always set).
    pub envelope: Envelope,
    /// Deterministic delivery key.
    pub idempotency_key: String,
    /// The transformed event, serialized; `None` when the transform produced nothing (the
    /// event is filtered out and acknowledged).
    pub body: Option<Vec<u8>>,
    /// Top-level fields of the transformed event (for HTTP path templates).
    pub output: Value,
    /// Indexes of the routes whose predicate holds.
    pub routes: Vec<usize>,
}

/// Whether a content type is JSON: absent, `application/json`, `text/json` or any `+json`.
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media.is_empty()
        || media == "application/json"
        || media == "text/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
}

impl CompiledFlow {
    /// Compiles flow number `index` of a config.
    pub fn compile(
        index: usize,
        config: &FlowConfig,
        max_message_bytes: usize,
    ) -> Result<Self, FieldError> {
        let field = |f: &str| format!("flows[{index}].{f}");
        let contract = ContractValidator::compile(
            &config.contract.name,
            config.contract.version,
            &config.contract.schema,
        )
        .map_err(|e| {
            FieldError::new(
                field("contract.schema"),
                format!("is not a valid JSON Schema: {e}"),
            )
        })?;

        let transform_config = config.transform.clone().unwrap_or_default();
        let mut pairs: BTreeMap<String, Value> = BTreeMap::new();
        for (name, table) in &transform_config.lookups {
            let object: serde_json::Map<String, Value> = table
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            pairs.insert(name.clone(), Value::Object(object));
        }
        for (name, value) in &transform_config.args {
            if pairs.contains_key(name) {
                return Err(FieldError::new(
                    field(&format!("transform.args.{name}")),
                    "has the same name as a lookup; rename one of them",
                ));
            }
            pairs.insert(name.clone(), value.clone());
        }
        for name in pairs.keys() {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(FieldError::new(
                    field("transform"),
                    format!("variable name {name:?} is not a jq identifier (letters, digits, _)"),
                ));
            }
        }
        let vars = JqVariables::new(pairs);
        let jq = |code: &str, f: String| {
            JqProgram::compile(code, &vars)
                .map_err(|e| FieldError::new(f, format!("jq program {e}")))
        };

        let transform = match &transform_config.jq {
            Some(code) => Some(jq(code, field("transform.jq"))?),
            None => None,
        };
        let output_contract = match &transform_config.output_contract {
            Some(c) => Some(
                ContractValidator::compile(&c.name, c.version, &c.schema).map_err(|e| {
                    FieldError::new(
                        field("transform.outputContract.schema"),
                        format!("is not a valid JSON Schema: {e}"),
                    )
                })?,
            ),
            None => None,
        };
        let mut routes = Vec::new();
        for (j, route) in config.routes.iter().enumerate() {
            let when = match &route.when {
                Some(code) => Some(jq(code, field(&format!("routes[{j}].when")))?),
                None => None,
            };
            if route.retry.max_attempts == 0 {
                return Err(FieldError::new(
                    field(&format!("routes[{j}].retry.maxAttempts")),
                    "must be at least 1",
                ));
            }
            routes.push(CompiledRoute {
                config: route.clone(),
                when,
            });
        }
        let idempotency = match &config.delivery.idempotency {
            Some(i) => Some(jq(&i.key, field("delivery.idempotency.key"))?),
            None => None,
        };
        let ordering = match &config.delivery.ordering {
            Some(o) => {
                if o.partitions == 0 {
                    return Err(FieldError::new(
                        field("delivery.ordering.partitions"),
                        "must be at least 1",
                    ));
                }
                Some(jq(&o.key, field("delivery.ordering.key"))?)
            }
            None => None,
        };
        if config.prefetch == 0 {
            return Err(FieldError::new(field("prefetch"), "must be at least 1"));
        }
        if let SourceConfig::Http { path, .. } = &config.source
            && !path.starts_with('/')
        {
            return Err(FieldError::new(
                field("source.http.path"),
                "must start with /",
            ));
        }
        let names = FlowNames::new(&config.namespace, &config.name);
        let may_loop = transform
            .iter()
            .chain(&idempotency)
            .chain(&ordering)
            .chain(routes.iter().filter_map(|r| r.when.as_ref()))
            .any(JqProgram::may_loop);
        Ok(Self {
            may_loop,
            plan: millrace_topology::plan(config),
            names,
            config: config.clone(),
            contract,
            transform,
            output_event_type: transform_config
                .output_contract
                .as_ref()
                .map(|c| c.event_type.clone()),
            output_dataschema: transform_config
                .output_contract
                .as_ref()
                .map(|c| format!("urn:millrace:contract:{}:v{}", c.name, c.version)),
            output_contract,
            vars,
            routes,
            idempotency,
            ordering,
            max_message_bytes,
        })
    }

    /// A short label for logs and metrics: `<namespace>/<name>`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// The route named `name`.
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.config.name == name)
    }

    /// Checks the raw message before it is parsed: size, content type, encoding. Returns the
    /// parsed JSON.
    pub fn parse(&self, body: &[u8], content_type: Option<&str>) -> Result<Value, Rejection> {
        if body.len() > self.max_message_bytes {
            return Err(Rejection::new(
                DeadLetterReason::PayloadTooLarge,
                format!(
                    "body is {} bytes; the limit is {}",
                    body.len(),
                    self.max_message_bytes
                ),
            ));
        }
        if !is_json_content_type(content_type) {
            return Err(Rejection::new(
                DeadLetterReason::UnsupportedContentType,
                format!(
                    "content type {:?} is not JSON",
                    content_type.unwrap_or_default()
                ),
            ));
        }
        decode_body(body)
    }

    /// Runs the whole pipeline on one message.
    pub fn process(&self, message: Message<'_>) -> Result<Processed, Rejection> {
        let Message {
            body,
            content_type,
            mut envelope,
        } = message;
        let event = self.parse(body, content_type)?;
        if let Some(t) = &envelope.event_type
            && t != &self.config.contract.event_type
        {
            return Err(Rejection::new(
                DeadLetterReason::WrongEventType,
                format!(
                    "event type {t:?} is not the contract's {:?}",
                    self.config.contract.event_type
                ),
            ));
        }
        self.contract
            .validate(&event)
            .map_err(|e| Rejection::new(DeadLetterReason::ContractViolation, e))?;

        let key = match &self.idempotency {
            Some(program) => Some(self.key_of(program, &event, "idempotency key")?),
            None => None,
        };
        envelope.derive_id(key.as_deref(), body);
        let idempotency_key = key.unwrap_or_else(|| envelope.id.clone());
        if envelope.event_type.is_none() {
            envelope.event_type = Some(self.config.contract.event_type.clone());
        }

        let output = match &self.transform {
            Some(program) => program.run_one(&event, &self.vars).map_err(|e| {
                Rejection::new(DeadLetterReason::JqError, format!("transform: {e}"))
            })?,
            None => Some(event),
        };
        let Some(output) = output else {
            return Ok(Processed {
                envelope,
                idempotency_key,
                body: None,
                output: Value::Null,
                routes: Vec::new(),
            });
        };
        if let Some(validator) = &self.output_contract {
            validator
                .validate(&output)
                .map_err(|e| Rejection::new(DeadLetterReason::OutputContractViolation, e))?;
            envelope.event_type = self.output_event_type.clone();
            envelope.dataschema = self.output_dataschema.clone();
        }
        let mut routes = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let selected = match &route.when {
                None => true,
                Some(program) => {
                    let out = program.run(&output, &self.vars).map_err(|e| {
                        Rejection::new(
                            DeadLetterReason::JqError,
                            format!("route {} predicate: {e}", route.config.name),
                        )
                    })?;
                    out.first().is_some_and(truthy)
                }
            };
            if selected {
                routes.push(i);
            }
        }
        let serialized = serde_json::to_vec(&output).map_err(|e| {
            Rejection::new(
                DeadLetterReason::JqError,
                format!("output is not serializable: {e}"),
            )
        })?;
        Ok(Processed {
            envelope,
            idempotency_key,
            body: Some(serialized),
            output,
            routes,
        })
    }

    /// The partition key of an ordered flow for a raw body. Bodies that do not parse, or whose
    /// key fails, hash by content: they are dead-lettered by the partition consumer anyway.
    pub fn partition_key(&self, body: &[u8], content_type: Option<&str>) -> String {
        let Some(program) = &self.ordering else {
            return String::new();
        };
        self.parse(body, content_type)
            .ok()
            .and_then(|event| self.key_of(program, &event, "ordering key").ok())
            .unwrap_or_else(|| envelope::content_id(body))
    }

    fn key_of(&self, program: &JqProgram, event: &Value, what: &str) -> Result<String, Rejection> {
        let out = program
            .run_one(event, &self.vars)
            .map_err(|e| Rejection::new(DeadLetterReason::JqError, format!("{what}: {e}")))?;
        match out {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(Value::Null) | None => Err(Rejection::new(
                DeadLetterReason::JqError,
                format!("{what} is null or empty for this event"),
            )),
            Some(other) => Ok(other.to_string()),
        }
    }

    /// Whether any of the flow's jq programs may run for a time unbounded by its event (see
    /// [`JqProgram::may_loop`]): such flows run under [`crate::budget::TransformBudget`].
    pub fn may_loop(&self) -> bool {
        self.may_loop
    }

    /// Whether the flow is ordered.
    pub fn is_ordered(&self) -> bool {
        self.ordering.is_some()
    }
}

/// The UTF-8 byte-order mark that SAP and .NET senders put before their text.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes a message body as JSON text: a leading UTF-8 byte-order mark is dropped (it marks
/// the encoding, it is not content), then the body must be non-empty UTF-8 JSON.
pub fn decode_body(body: &[u8]) -> Result<Value, Rejection> {
    let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejection::new(DeadLetterReason::EmptyBody, "body is empty"));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        Rejection::new(
            DeadLetterReason::InvalidUtf8,
            format!("body is not UTF-8: {e}"),
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            DeadLetterReason::InvalidJson,
            format!("body is not JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_byte_order_mark_before_json_is_accepted() {
        let with_bom = b"\xEF\xBB\xBF{\"id\": \"A-1\"}";
        assert_eq!(
            decode_body(with_bom).unwrap(),
            serde_json::json!({"id": "A-1"})
        );
        assert_eq!(
            decode_body(b"\xEF\xBB\xBF").unwrap_err().reason,
            DeadLetterReason::EmptyBody
        );
        assert_eq!(
            decode_body(b"\xEF\xBB\xBF\xff").unwrap_err().reason,
            DeadLetterReason::InvalidUtf8
        );
        // Only a leading mark is an encoding mark; anywhere else the body is not JSON.
        assert_eq!(
            decode_body(b"{}\xEF\xBB\xBF").unwrap_err().reason,
            DeadLetterReason::InvalidJson
        );
    }

    use super::*;
    use crate::amqp;
    use crate::headers;
    use lapin::BasicProperties;
    use lapin::types::{FieldTable, ShortString};
    use millrace_crds::worker_config::*;
    use serde_json::json;

    fn flow() -> FlowConfig {
        FlowConfig {
            namespace: "ns".into(),
            name: "f".into(),
            version: "1.0.0".into(),
            broker: "bus".into(),
            source: SourceConfig::Amqp {
                connection: "bus".into(),
                exchange: "x".into(),
                routing_keys: vec!["#".into()],
            },
            contract: ContractConfig {
                name: "in".into(),
                version: 1,
                event_type: "t.v1".into(),
                schema: json!({"type": "object", "required": ["id", "qty"],
                    "properties": {"id": {"type": "string"}, "qty": {"type": "number"}}}),
            },
            transform: Some(TransformConfig {
                jq: Some("{order: .id, qty: (.qty * $factor), plant: $plants[.site]}".into()),
                lookups: BTreeMap::from([(
                    "plants".into(),
                    BTreeMap::from([("b".into(), "1000".into())]),
                )]),
                args: BTreeMap::from([("factor".into(), json!(2))]),
                output_contract: Some(ContractConfig {
                    name: "out".into(),
                    version: 1,
                    event_type: "o.v1".into(),
                    schema: json!({"type": "object", "required": ["plant"],
                        "properties": {"plant": {"type": "string"}}}),
                }),
            }),
            routes: vec![
                RouteConfig {
                    name: "big".into(),
                    when: Some(".qty > 10".into()),
                    connection: "bus".into(),
                    destination: DestinationConfig::Amqp {
                        exchange: "e".into(),
                        routing_key: "k".into(),
                    },
                    retry: RetryConfig::default(),
                },
                RouteConfig {
                    name: "all".into(),
                    when: None,
                    connection: "bus".into(),
                    destination: DestinationConfig::Amqp {
                        exchange: "e".into(),
                        routing_key: "k".into(),
                    },
                    retry: RetryConfig::default(),
                },
            ],
            delivery: DeliveryConfig {
                dead_letter: true,
                idempotency: Some(IdempotencyConfig {
                    key: ".id".into(),
                    window_ms: 60_000,
                }),
                ordering: None,
                retry_tiers_ms: vec![1000],
            },
            archive_retention_ms: 1000,
            sla_max_latency_ms: None,
            prefetch: 10,
        }
    }

    fn compiled() -> CompiledFlow {
        CompiledFlow::compile(0, &flow(), 1024).unwrap()
    }

    fn props() -> BasicProperties {
        BasicProperties::default().with_content_type(ShortString::from("application/json"))
    }

    #[test]
    fn happy_event_is_transformed_and_routed() {
        let p = compiled()
            .process(amqp::message(
                br#"{"id": "A", "qty": 6, "site": "b"}"#,
                &props(),
            ))
            .unwrap();
        assert_eq!(p.idempotency_key, "A");
        assert_eq!(p.envelope.id, "A");
        assert_eq!(p.envelope.event_type.as_deref(), Some("o.v1"));
        assert_eq!(p.output, json!({"order": "A", "qty": 12, "plant": "1000"}));
        assert_eq!(p.routes, vec![0, 1]);
        let p = compiled()
            .process(amqp::message(
                br#"{"id": "B", "qty": 1, "site": "b"}"#,
                &props(),
            ))
            .unwrap();
        assert_eq!(p.routes, vec![1]);
    }

    #[test]
    fn poison_is_classified() {
        let f = compiled();
        let reason = |body: &[u8], props: BasicProperties| {
            f.process(amqp::message(body, &props)).unwrap_err().reason
        };
        use DeadLetterReason::*;
        assert_eq!(reason(b"{nope", props()), InvalidJson);
        assert_eq!(reason(b"\xff\xfe{}", props()), InvalidUtf8);
        assert_eq!(reason(b"", props()), EmptyBody);
        assert_eq!(reason(&vec![b' '; 2048], props()), PayloadTooLarge);
        assert_eq!(reason(br#"{"qty": 1}"#, props()), ContractViolation);
        assert_eq!(
            reason(br#"{"id": "A", "qty": "1"}"#, props()),
            ContractViolation
        );
        // $plants[.site] is null for an unknown site: the output contract refuses it.
        assert_eq!(
            reason(br#"{"id": "A", "qty": 1, "site": "z"}"#, props()),
            OutputContractViolation
        );
        assert_eq!(
            reason(
                br#"{"id": "A", "qty": 1}"#,
                BasicProperties::default().with_content_type(ShortString::from("text/csv"))
            ),
            UnsupportedContentType
        );
        let mut h = FieldTable::default();
        headers::set_str(&mut h, headers::CE_TYPE, "other.v1");
        assert_eq!(
            reason(br#"{"id": "A", "qty": 1}"#, props().with_headers(h)),
            WrongEventType
        );
    }

    #[test]
    fn jq_runtime_errors_are_permanent() {
        let mut f = flow();
        f.transform.as_mut().unwrap().jq = Some("{plant: (.id | tonumber | tostring)}".into());
        let f = CompiledFlow::compile(0, &f, 1024).unwrap();
        let e = f
            .process(amqp::message(br#"{"id": "A", "qty": 1}"#, &props()))
            .unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::JqError);
    }

    #[test]
    fn bad_programs_name_their_field() {
        let mut f = flow();
        f.routes[1].when = Some(".qty >".into());
        let e = CompiledFlow::compile(3, &f, 1024).err().unwrap();
        assert_eq!(e.field, "flows[3].routes[1].when");
        let mut f = flow();
        f.contract.schema = json!({"type": "nonsense"});
        let e = CompiledFlow::compile(0, &f, 1024).err().unwrap();
        assert_eq!(e.field, "flows[0].contract.schema");
    }

    #[test]
    fn content_types() {
        assert!(is_json_content_type(None));
        assert!(is_json_content_type(Some(
            "application/json; charset=utf-8"
        )));
        assert!(is_json_content_type(Some("application/cloudevents+json")));
        assert!(!is_json_content_type(Some("application/xml")));
    }
}
