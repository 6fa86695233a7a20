//! Sources: AMQP queues and HTTP ingress.

pub mod amqp;
pub mod http;
