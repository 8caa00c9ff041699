//! Kubernetes label selectors as the external metrics API receives them (`labelSelector=` in
//! the query): `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`,
//! `key` and `!key`, joined by commas, all of which must hold.

use std::collections::BTreeMap;

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed selector; the empty one matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses `text`.
    ///
    /// # Errors
    /// What is wrong with it, for a `400 BadRequest`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(requirement(part)?);
        }
        Ok(Self(requirements))
    }

    /// Whether `labels` satisfy every requirement.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<&str, &str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(key, values) => labels
                .get(key.as_str())
                .is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::NotIn(key, values) => labels
                .get(key.as_str())
                .is_none_or(|v| !values.iter().any(|x| x == v)),
            Requirement::Exists(key) => labels.contains_key(key.as_str()),
            Requirement::DoesNotExist(key) => !labels.contains_key(key.as_str()),
        })
    }
}

/// Commas outside parentheses separate requirements.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0_u32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn requirement(part: &str) -> Result<Requirement, String> {
    let bad = || format!("unable to parse requirement: {part:?}");
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(
            label_key(key.trim()).ok_or_else(bad)?,
        ));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(
            label_key(key.trim()).ok_or_else(bad)?,
            vec![label_value(value.trim()).ok_or_else(bad)?],
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::In(
            label_key(key.trim()).ok_or_else(bad)?,
            vec![label_value(value.trim()).ok_or_else(bad)?],
        ));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    match words.as_slice() {
        [key] => Ok(Requirement::Exists(label_key(key).ok_or_else(bad)?)),
        [key, rest] => {
            let rest = rest.trim();
            let (notin, list) = if let Some(list) = rest.strip_prefix("notin") {
                (true, list)
            } else if let Some(list) = rest.strip_prefix("in") {
                (false, list)
            } else {
                return Err(bad());
            };
            let list = list
                .trim()
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values = list
                .split(',')
                .map(|v| label_value(v.trim()).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?;
            let key = label_key(key).ok_or_else(bad)?;
            Ok(if notin {
                Requirement::NotIn(key, values)
            } else {
                Requirement::In(key, values)
            })
        }
        _ => Err(bad()),
    }
}

/// A label key: an optional DNS prefix and `/`, then a name of at most 63 characters.
fn label_key(key: &str) -> Option<String> {
    let name = key.rsplit_once('/').map_or(key, |(_, name)| name);
    (!name.is_empty() && label_value(name).is_some()).then(|| key.to_owned())
}

/// A label value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends (or empty).
fn label_value(value: &str) -> Option<String> {
    let ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric());
    ok.then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(bot: &str) -> BTreeMap<&str, &str> {
        BTreeMap::from([("bot", bot), ("group", "default")])
    }

    #[test]
    fn every_kind_of_requirement_matches_as_kubernetes_does() {
        let cases = [
            ("", "a", true),
            ("bot=a", "a", true),
            ("bot=a", "b", false),
            ("bot==a,group=default", "a", true),
            ("bot=a,group=other", "a", false),
            ("bot!=a", "a", false),
            ("bot!=a", "b", true),
            ("bot in (a, b)", "b", true),
            ("bot in (a,b),group in (default)", "c", false),
            ("bot notin (a,b)", "c", true),
            ("group", "a", true),
            ("!group", "a", false),
            ("!team", "a", true),
            ("team=x", "a", false),
            ("team!=x", "a", true),
        ];
        for (text, bot, want) in cases {
            let selector = Selector::parse(text).unwrap();
            assert_eq!(selector.matches(&labels(bot)), want, "{text:?} on {bot}");
        }
    }

    #[test]
    fn a_malformed_selector_is_refused() {
        for text in [
            "bot=a b",
            "bot in a,b",
            "bot in (a",
            "=a",
            "bot=-a",
            "bot sort (a)",
        ] {
            assert!(Selector::parse(text).is_err(), "{text:?}");
        }
    }
}
