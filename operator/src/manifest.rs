//! DiscordBot manifests as files (`shardyard plan -f`, `shardyard dev -f`): the bots in a YAML
//! file of one or more documents, and a plan's objects as YAML documents.

use serde_json::Value;

use crate::plan::Plan;
use crate::resource::{DiscordBot, GROUP};

/// Why a manifest cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML.
    #[error("the file is not YAML: {0}")]
    Yaml(String),
    /// No document is a DiscordBot.
    #[error(
        "no DiscordBot in the file (a document with apiVersion {GROUP}/v1alpha1 and kind DiscordBot)"
    )]
    NoBot,
    /// A DiscordBot the API server would refuse: its schema or a rule says no.
    #[error("the DiscordBot {name:?} is invalid:\n  {}", errors.join("\n  "))]
    Refused {
        /// Its name.
        name: String,
        /// Each problem, as the API server words it (`<field path>: <what>`).
        errors: Vec<String>,
    },
    /// A DiscordBot document that does not read as one.
    #[error("the DiscordBot in document {document} does not read as one: {reason}")]
    Invalid {
        /// Its place in the file, from 1.
        document: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Every DiscordBot in `text`, each with a namespace: its own, else `namespace`, each checked
/// against the CRD's schema and rules as the API server would check it. Other documents (a Secret
/// beside the bot, say) are left out.
///
/// # Errors
/// [`ManifestError`] when the text is not YAML, holds no DiscordBot, or one is refused.
pub fn read_bots(text: &str, namespace: &str) -> Result<Vec<DiscordBot>, ManifestError> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    let mut bots = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let is_bot = document["kind"] == "DiscordBot"
            && document["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with(&format!("{GROUP}/")));
        if !is_bot {
            continue;
        }
        if let Err(errors) = crate::validate::validate(&document) {
            return Err(ManifestError::Refused {
                name: document["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                errors,
            });
        }
        let mut bot: DiscordBot =
            serde_json::from_value(document).map_err(|e| ManifestError::Invalid {
                document: index + 1,
                reason: e.to_string(),
            })?;
        if bot.metadata.namespace.is_none() {
            bot.metadata.namespace = Some(namespace.to_owned());
        }
        bots.push(bot);
    }
    if bots.is_empty() {
        return Err(ManifestError::NoBot);
    }
    Ok(bots)
}

/// The plan's objects as YAML documents, each after `---`.
///
/// # Errors
/// When an object does not serialize (they always do: they are k8s-openapi types).
pub fn render(plan: &Plan) -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for object in &plan.objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&with_type(object))?);
    }
    Ok(out)
}

/// The object with `apiVersion` and `kind` first, as `kubectl` prints them.
fn with_type(object: &crate::plan::Child) -> Value {
    let value = serde_json::to_value(object).unwrap_or_default();
    let mut ordered = serde_json::Map::new();
    for key in ["apiVersion", "kind"] {
        if let Some(v) = value.get(key) {
            ordered.insert(key.to_owned(), v.clone());
        }
    }
    if let Value::Object(map) = value {
        for (k, v) in map {
            ordered.entry(k).or_insert(v);
        }
    }
    Value::Object(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bots_are_found_among_other_documents_and_get_a_namespace() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: t}\nstringData: {token: x}\n---\n\
                    apiVersion: shardyard.dev/v1alpha1\nkind: DiscordBot\nmetadata: {name: a}\n\
                    spec: {tokenSecret: {name: t}, nats: {url: 'nats://n:4222'}}\n---\n\
                    apiVersion: shardyard.dev/v1alpha1\nkind: DiscordBot\nmetadata: {name: b, namespace: prod}\n\
                    spec: {tokenSecret: {name: t}, nats: {url: 'nats://n:4222'}}\n";
        let bots = read_bots(text, "dev").unwrap();
        let names: Vec<_> = bots
            .iter()
            .map(|b| {
                (
                    b.metadata.name.clone().unwrap(),
                    b.metadata.namespace.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [("a".into(), "dev".into()), ("b".into(), "prod".into())]
        );
    }

    #[test]
    fn files_without_a_readable_bot_say_so() {
        assert!(matches!(
            read_bots("kind: Secret\n", "d"),
            Err(ManifestError::NoBot)
        ));
        assert!(matches!(
            read_bots("a: [", "d"),
            Err(ManifestError::Yaml(_))
        ));
        let error = read_bots(
            "apiVersion: shardyard.dev/v1alpha1\nkind: DiscordBot\nmetadata: {name: a}\nspec: {shards: 3}\n",
            "d",
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("spec.tokenSecret: Required value"),
            "{error}"
        );
    }
}
