//! A DiscordBot checked without a cluster (`shardyard plan`, `shardyard dev`) against the CRD's
//! own schema and CEL rules, as the API server checks it: schema defaults applied first, then
//! types, required fields, enums, ranges, lengths and patterns, then the `x-kubernetes-validations`
//! rules (kube-cel). Errors read as the API server's do: `<field path>: <what>`, with a CEL rule's
//! message. `tests/tests/operator_crd.rs` compares the two on the real API server.

use kube::CustomResourceExt as _;
use kube::core::cel::{Validator, apply_defaults};
use serde_json::Value;

use crate::DiscordBot;

/// The CRD's schema (`openAPIV3Schema` of its version).
#[must_use]
pub fn schema() -> Value {
    let crd = DiscordBot::crd();
    crd.spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_default()
}

/// Checks a DiscordBot document (its JSON) as the API server would on create.
///
/// # Errors
/// Every problem found, one line each, as the API server words them.
pub fn validate(document: &Value) -> Result<(), Vec<String>> {
    let schema = schema();
    let defaulted = apply_defaults(&schema, document);
    let mut errors = Vec::new();
    walk(&schema, &defaulted, "", &mut errors);
    if errors.is_empty() {
        // CEL rules assume a structurally valid object, as the API server runs them only then.
        if let Err(failures) = Validator::new().validate(&schema, &defaulted, None) {
            for failure in failures.into_vec() {
                let path = if failure.field_path.is_empty() {
                    "<nil>".to_owned()
                } else {
                    failure.field_path.clone()
                };
                // The API server shows a scalar that failed a rule, not an object or a list.
                match at(&defaulted, &failure.field_path) {
                    Some(value @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
                        errors.push(format!(
                            "{path}: Invalid value: {}: {}",
                            describe(Some(value)),
                            failure.message
                        ));
                    }
                    _ => errors.push(format!("{path}: Invalid value: {}", failure.message)),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The value at a dotted path (`spec.workers`), for describing it.
fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(value, |v, key| v.get(key))
}

/// How the API server shows a value in "Invalid value: …".
fn describe(value: Option<&Value>) -> String {
    match value {
        Some(Value::Object(_)) | None => "\"object\"".to_owned(),
        Some(Value::Array(_)) => "\"array\"".to_owned(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        // A nullable field may be null; anything else is treated as absent (pruned).
        return;
    }
    let shown = if path.is_empty() { "<nil>" } else { path };
    if schema["x-kubernetes-int-or-string"] == true {
        if !matches!(type_name(value), "integer" | "string") {
            errors.push(format!(
                "{shown}: Invalid value: {}: {shown} in body must be of type integer-or-string: {:?}",
                describe(Some(value)),
                type_name(value)
            ));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(|v| describe(Some(v))).collect();
        errors.push(format!(
            "{shown}: Unsupported value: {}: supported values: {}",
            describe(Some(value)),
            supported.join(", ")
        ));
        return;
    }
    let Some(wanted) = schema["type"].as_str() else {
        return;
    };
    let actual = type_name(value);
    let fits = actual == wanted || (wanted == "number" && actual == "integer");
    if !fits {
        errors.push(format!(
            "{shown}: Invalid value: {}: {shown} in body must be of type {wanted}: {actual:?}",
            describe(Some(value))
        ));
        return;
    }
    match value {
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(key) = required.as_str()
                    && map.get(key).is_none_or(Value::is_null)
                {
                    errors.push(format!("{}: Required value", join(path, key)));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                for (key, property) in properties {
                    if let Some(child) = map.get(key) {
                        walk(property, child, &join(path, key), errors);
                    }
                }
            }
            if let Some(additional) = schema["additionalProperties"].as_object() {
                let additional = Value::Object(additional.clone());
                for (key, child) in map {
                    walk(&additional, child, &join(path, key), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                errors.push(format!(
                    "{shown}: Invalid value: {}: {shown} in body should have at least {min} items",
                    items.len()
                ));
            }
            for (i, item) in items.iter().enumerate() {
                walk(&schema["items"], item, &format!("{shown}[{i}]"), errors);
            }
        }
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64()
                && length < min
            {
                errors.push(format!(
                    "{shown}: Invalid value: {text:?}: {shown} in body should be at least {min} chars long"
                ));
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && length > max
            {
                errors.push(format!(
                    "{shown}: Too long: may not be more than {max} bytes"
                ));
            }
            if let Some(pattern) = schema["pattern"].as_str()
                && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(text))
            {
                errors.push(format!(
                    "{shown}: Invalid value: {text:?}: {shown} in body should match '{pattern}'"
                ));
            }
        }
        Value::Number(number) => {
            let value = number.as_f64().unwrap_or_default();
            if let Some(min) = schema["minimum"].as_f64()
                && value < min
            {
                errors.push(format!(
                    "{shown}: Invalid value: {number}: {shown} in body should be greater than or equal to {}",
                    trim_float(min)
                ));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && value > max
            {
                errors.push(format!(
                    "{shown}: Invalid value: {number}: {shown} in body should be less than or equal to {}",
                    trim_float(max)
                ));
            }
        }
        _ => {}
    }
}

/// `1.0` → `1`, as the API server prints bounds.
fn trim_float(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::validate;

    fn bot(spec: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "shardyard.dev/v1alpha1",
            "kind": "DiscordBot",
            "metadata": {"name": "mybot", "namespace": "default"},
            "spec": spec,
        })
    }

    fn errors(spec: serde_json::Value) -> Vec<String> {
        validate(&bot(spec)).err().unwrap_or_default()
    }

    #[test]
    fn a_minimal_bot_is_valid_once_defaulted() {
        let minimal = json!({"tokenSecret": {"name": "t"}, "nats": {"url": "nats://n:4222"}});
        assert_eq!(validate(&bot(minimal)), Ok(()));
    }

    #[test]
    fn bad_bots_get_the_api_servers_words() {
        let base = |extra: serde_json::Value| {
            let mut spec = json!({"tokenSecret": {"name": "t"}, "nats": {"url": "nats://n:4222"}});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            errors(spec)
        };
        assert_eq!(
            base(json!({"shardsPerPod": 0})),
            [
                "spec.shardsPerPod: Invalid value: 0: spec.shardsPerPod in body should be greater than or equal to 1"
            ]
        );
        let intents = base(json!({"intents": ["GUILDS", "TELEPATHY"]}));
        assert!(
            intents[0].starts_with(
                r#"spec.intents[1]: Unsupported value: "TELEPATHY": supported values: "GUILDS""#
            ),
            "{intents:?}"
        );
        assert_eq!(
            errors(json!({"nats": {"url": "nats://n:4222"}})),
            ["spec.tokenSecret: Required value"]
        );
        let workers = base(json!({"workers": {"minReplicas": 5, "maxReplicas": 2}}));
        assert_eq!(
            workers,
            [
                "spec.workers: Invalid value: workers.minReplicas must not exceed workers.maxReplicas"
            ]
        );
        let zero = base(json!({"workers": {"minReplicas": 0}}));
        assert!(
            zero[0]
                .contains("spec.workers.minReplicas may be 0 only with autoscaling.provider keda"),
            "{zero:?}"
        );
        assert_eq!(
            base(json!({"workers": {"minReplicas": 0}, "autoscaling": {"provider": "keda"}})),
            Vec::<String>::new()
        );
        let keda = base(
            json!({"autoscaling": {"provider": "keda", "keda": {"trigger": "nats-jetstream"}}}),
        );
        assert!(
            keda[0].starts_with("spec.autoscaling: Invalid value: autoscaling.keda.natsMonitoringEndpoint is required"),
            "{keda:?}"
        );
        let shards = base(json!({"shards": 0}));
        assert!(
            shards[0].ends_with(r#"shards must be "auto" or a whole number of at least 1"#),
            "{shards:?}"
        );
        let url = base(json!({"nats": {"url": "http://n"}}));
        assert!(
            url[0].starts_with(r#"spec.nats.url: Invalid value: "http://n": nats.url must be"#),
            "{url:?}"
        );
    }
}
