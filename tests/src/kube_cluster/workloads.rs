//! Manifests of the project's own programs as a test cluster's node runs them.

/// A Deployment `name` in `namespace` of `shardyard sim` (from `image`, imported into the node)
/// listening on `port` with `args` after its address, ready once `/readyz` answers, behind a
/// Service `name` whose port `service_port` reaches it.
#[must_use]
pub fn sim_workload(
    image: &str,
    namespace: &str,
    name: &str,
    port: u16,
    service_port: u16,
    args: &[&str],
) -> String {
    // JSON strings are YAML strings: any argument survives quoting.
    let args: Vec<String> = ["sim", "--addr", &format!("0.0.0.0:{port}")]
        .iter()
        .chain(args)
        .map(|a| serde_json::Value::from(*a).to_string())
        .collect();
    let args = args.join(", ");
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: sim
        image: {image}
        imagePullPolicy: Never
        args: [{args}]
        ports: [{{containerPort: {port}}}]
        readinessProbe:
          httpGet: {{path: /readyz, port: {port}}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: {service_port}, targetPort: {port}}}]
"#
    )
}
