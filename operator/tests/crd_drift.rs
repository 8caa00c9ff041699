//! The committed CRD (`crds/discordbots.shardyard.dev.yaml`) is what the types generate: a
//! change to `src/resource.rs` without `shardyard crd > crds/discordbots.shardyard.dev.yaml`
//! fails here, in CI.

use std::path::Path;

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(shardyard_operator::crd::CRD_PATH);
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let generated = shardyard_operator::crd::crd_yaml().expect("the CRD serializes");
    assert!(
        committed == generated,
        "{} differs from what the types generate: run\n  cargo run -p shardyard -- crd > {}\n\
         and commit it",
        path.display(),
        shardyard_operator::crd::CRD_PATH
    );
}

#[test]
fn the_charts_crd_is_the_same() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chart = root.join("charts/shardyard/crds/discordbots.shardyard.dev.yaml");
    let chart = std::fs::read_to_string(&chart)
        .unwrap_or_else(|e| panic!("reading {}: {e}", chart.display()));
    let generated = shardyard_operator::crd::crd_yaml().expect("the CRD serializes");
    assert!(
        chart == generated,
        "charts/shardyard/crds/ differs from what the types generate: run\n  \
         cargo run -p shardyard -- crd | tee {} charts/shardyard/crds/discordbots.shardyard.dev.yaml",
        shardyard_operator::crd::CRD_PATH
    );
}
