//! Sources: AMQP queues and HTTP ingress.

pub mod acks;
pub mod amqp;
pub mod http;
