//! RabbitMQ topology of a Millrace flow, shared by the operator (which owns it in clusters) and
//! the worker (which declares it for local runs and tests).
//!
//! [`plan`] is pure: the same [`FlowConfig`] always gives the same [`TopologyPlan`]. This crate
//! does no I/O; `millrace-broker` declares and deletes a plan on RabbitMQ.
//!
//! The layout of one flow `millrace.<ns>.<flow>`:
//!
//! | object | kind | purpose |
//! |---|---|---|
//! | `<base>` (exchange) | direct | ingress, retry returns, redrives, dead-letters |
//! | `<base>` (queue) | quorum, `x-delivery-limit` | main queue; bound to the source exchange and to `<base>` with `ingest` and `retry` |
//! | `<base>.delay.<d>ms` | quorum, `x-message-ttl` | the retry delay `d` (key `retry.<d>ms`); expired messages dead-letter (at least once) to `<base>` with key `retry` |
//! | `<base>.dlq` | quorum | dead-letters (key `dlq`) |
//! | `<base>.archive` | stream, `x-max-age` | replay archive, bound with the source keys and `ingest` |
//! | `<base>.partition` (exchange) | `x-consistent-hash` | ordered flows: splits by the `x-millrace-partition-key` header |
//! | `<base>.p<i>` | quorum, single active consumer, `x-delivery-limit` | ordered flows: partition `i` |

mod migrate;
mod plan;

pub use migrate::{ArgumentChange, Drain, Migration, Retirement, migration};

pub use plan::{
    ArgumentValue, BindingSpec, ExchangeSpec, ExchangeType, PARTITION_KEY_HEADER,
    QUEUE_DELIVERY_LIMIT, QueueRole, QueueSpec, ROUTING_KEY_DEAD_LETTER, ROUTING_KEY_INGEST,
    ROUTING_KEY_RETRY, TOLERATED_ARGUMENTS, TopologyPlan, plan, retry_routing_key,
};
