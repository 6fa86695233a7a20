//! Validation is cheap enough for a CLI to run over a whole repository of manifests.

mod common;

use std::time::{Duration, Instant};

use common::{documents, example_files, repo_root};
use millrace_admission::Admission;

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "timing means something only in a release build: cargo test --release -p millrace-admission"
)]
fn validating_3000_objects_takes_well_under_a_second() {
    let admission = Admission::millrace();
    let examples: Vec<serde_json::Value> = example_files(&repo_root().join("examples"))
        .iter()
        .flat_map(|file| documents(file))
        .filter(|document| {
            admission.serves(
                document["apiVersion"].as_str().unwrap_or_default(),
                document["kind"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(!examples.is_empty(), "no Millrace examples found");
    let manifests: Vec<&serde_json::Value> = examples.iter().cycle().take(3000).collect();

    let started = Instant::now();
    let refused: usize = manifests
        .iter()
        .map(|manifest| admission.validate(manifest).len())
        .sum();
    let elapsed = started.elapsed();

    assert_eq!(refused, 0, "the examples are valid");
    println!("validated {} objects in {elapsed:?}", manifests.len());
    assert!(
        elapsed < Duration::from_secs(1),
        "validating {} objects took {elapsed:?}; compile once in Admission::new, not per object",
        manifests.len()
    );
}
