//! The checked-in CRD YAML must equal what the types generate. Run `make crds` to refresh it.

use std::path::Path;

fn check_dir(dir: &Path) {
    for crd in millrace_crds::all_crds() {
        let path = dir.join(millrace_crds::crd_file_name(&crd));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
        let checked_in: serde_json::Value =
            serde_yaml::from_str(&text).expect("checked-in CRD parses");
        let generated = serde_json::to_value(&crd).unwrap();
        assert!(
            checked_in == generated,
            "{} is stale: run `make crds` and commit the result",
            path.display()
        );
    }
    let files = std::fs::read_dir(dir).unwrap().filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml"))
    });
    assert_eq!(
        files.count(),
        millrace_crds::all_crds().len(),
        "{} holds CRDs that no type generates",
        dir.display()
    );
}

#[test]
fn checked_in_crds_are_current() {
    check_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml"));
}

#[test]
fn kubeconform_schemas_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut expected = 0;
    for crd in millrace_crds::all_crds() {
        for (path, schema) in millrace_crds::json_schema::kubeconform_schemas(&crd) {
            expected += 1;
            let file = dir.join(&path);
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", file.display()));
            let checked_in: serde_json::Value =
                serde_json::from_str(&text).expect("checked-in schema parses");
            assert!(
                checked_in == schema,
                "{} is stale: run `make crds` and commit the result",
                file.display()
            );
        }
    }
    let found = std::fs::read_dir(dir.join(millrace_crds::GROUP))
        .expect("crds/schemas/millrace.dev exists")
        .count();
    assert_eq!(
        found, expected,
        "crds/schemas holds schemas that no type generates"
    );
}

#[test]
fn chart_crds_are_current() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/millrace/crds");
    if chart.exists() {
        check_dir(&chart);
    }
}

#[test]
fn every_crd_follows_the_api_conventions() {
    for crd in millrace_crds::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(crd.spec.group, "millrace.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["millrace".to_string()][..]),
            "{name}"
        );
        let v = &crd.spec.versions[0];
        assert_eq!(
            (v.name.as_str(), v.served, v.storage),
            ("v1alpha1", true, true),
            "{name}"
        );
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name}: status subresource"
        );
        let cols: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        for want in ["Ready", "Reason", "Age"] {
            assert!(cols.contains(&want), "{name}: column {want} in {cols:?}");
        }
    }
}

fn rules(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(list)) = map.get("x-kubernetes-validations") {
                out.extend(
                    list.iter()
                        .map(|r| r["rule"].as_str().unwrap_or_default().to_string()),
                );
            }
            map.values().for_each(|v| rules(v, out));
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| rules(v, out)),
        _ => {}
    }
}

#[test]
fn flows_carry_cel_rules() {
    use kube_core::CustomResourceExt;
    let crd = serde_json::to_value(millrace_crds::IntegrationFlow::crd()).unwrap();
    let mut found = Vec::new();
    rules(&crd, &mut found);
    assert!(
        found.len() >= 5,
        "IntegrationFlow has only {} CEL rules: {found:?}",
        found.len()
    );
    let cols = &crd["spec"]["versions"][0]["additionalPrinterColumns"];
    let names: Vec<&str> = cols
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["Version", "Contract", "Backlog", "DLQ"] {
        assert!(names.contains(&want), "{names:?}");
    }
}

fn formats(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(format) = map.get("format").and_then(serde_json::Value::as_str) {
                out.push(format.to_string());
            }
            map.values().for_each(|v| formats(v, out));
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| formats(v, out)),
        _ => {}
    }
}

/// `kubectl apply` warns about every integer format Kubernetes does not know (`uint32`, ...).
#[test]
fn integer_formats_are_ones_kubernetes_knows() {
    for crd in millrace_crds::all_crds() {
        let mut found = Vec::new();
        formats(&serde_json::to_value(&crd).unwrap(), &mut found);
        let unknown: Vec<&String> = found.iter().filter(|f| f.starts_with("uint")).collect();
        assert!(
            unknown.is_empty(),
            "{} uses formats {unknown:?}; Kubernetes warns about them on apply",
            millrace_crds::crd_file_name(&crd)
        );
    }
}
