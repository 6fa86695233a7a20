//! RabbitMQ topology.
