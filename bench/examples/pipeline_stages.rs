//! CPU time of each pipeline stage for the bench event, in process, without a broker:
//! `cargo run --release -p millrace-bench --example pipeline_stages`.
//!
//! Each stage runs over the same 20,000 pre-built events; the figure is the mean wall time per event
//! on one thread (the machine should be otherwise idle). "jaq" rows run the same programs through jaq
//! alone, for comparison with the native path the worker takes.

#[path = "../src/event.rs"]
#[allow(dead_code)]
mod event;
#[path = "../src/pipeline.rs"]
#[allow(dead_code)]
mod pipeline;

use std::time::Instant;

use millrace_worker::amqp;
use millrace_worker::pipeline::CompiledFlow;
use millrace_worker::pipeline::transform::{JqProgram, JqVariables};
use millrace_worker::pipeline::validate::ContractValidator;
use serde_json::Value;

const EVENTS: usize = 20_000;

fn stage<T>(name: &str, mut run: impl FnMut(usize) -> T) {
    let started = Instant::now();
    for i in 0..EVENTS {
        std::hint::black_box(run(i));
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / EVENTS as f64;
    println!("{name:<40} {micros:>7.2} µs");
}

fn main() {
    let config = pipeline::worker_config("pipeline", &pipeline::Outputs::new("pipeline"), 200);
    let flow =
        CompiledFlow::compile(0, &config.flows[0], 1 << 20).expect("the bench flow compiles");
    let messages: Vec<_> = (0..EVENTS as u64)
        .map(|i| (event::body(i, i), event::properties(i)))
        .collect();
    let inputs: Vec<Value> = messages
        .iter()
        .map(|(body, _)| serde_json::from_slice(body).expect("JSON"))
        .collect();
    let plants = serde_json::to_value(event::plant_codes()).expect("a map serializes");
    let vars = JqVariables::new([("plants".to_string(), plants)]);
    let input_contract =
        ContractValidator::compile("in", 1, &event::input_schema()).expect("schema");
    let output_contract =
        ContractValidator::compile("out", 1, &event::output_schema()).expect("schema");
    let transform = JqProgram::compile(event::TRANSFORM, &vars).expect("transform");
    let transform_jaq = JqProgram::compile_jaq_only(event::TRANSFORM, &vars).expect("transform");
    let predicate = JqProgram::compile(r#".plant == "1000""#, &vars).expect("predicate");
    let predicate_jaq =
        JqProgram::compile_jaq_only(r#".plant == "1000""#, &vars).expect("predicate");
    let outputs: Vec<Value> = inputs
        .iter()
        .map(|v| {
            transform
                .run_one(v, &vars)
                .expect("runs")
                .expect("one output")
        })
        .collect();

    println!("pipeline stages, mean per 1 KiB event over {EVENTS} events:");
    stage("parse (size, type, UTF-8, JSON)", |i| {
        flow.parse(
            &messages[i].0,
            messages[i].1.content_type().as_ref().map(|c| c.as_str()),
        )
    });
    stage("envelope from AMQP headers", |i| {
        amqp::envelope_of(&messages[i].1)
    });
    stage("validate input contract", |i| {
        input_contract.validate(&inputs[i])
    });
    stage("transform (native)", |i| {
        transform.run_one(&inputs[i], &vars)
    });
    stage("transform (jaq)", |i| {
        transform_jaq.run_one(&inputs[i], &vars)
    });
    stage("validate output contract", |i| {
        output_contract.validate(&outputs[i])
    });
    stage("route predicate (native)", |i| {
        predicate.run(&outputs[i], &vars)
    });
    stage("route predicate (jaq)", |i| {
        predicate_jaq.run(&outputs[i], &vars)
    });
    stage("serialize output", |i| serde_json::to_vec(&outputs[i]));
    stage("whole pipeline (CompiledFlow::process)", |i| {
        flow.process(amqp::message(&messages[i].0, &messages[i].1))
    });
}
