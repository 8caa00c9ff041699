//! Validation of a bulk overwrite's body (`PUT /applications/{id}/commands` and the guild form),
//! as Discord validates it: a JSON array of application command objects.
//!
//! - `type`: 1 (`CHAT_INPUT`, the default), 2 (`USER`) or 3 (`MESSAGE`); `PRIMARY_ENTRY_POINT`
//!   (4) needs an app with an Activity, which the simulated one is not.
//! - `name`: 1–32 characters (`BASE_TYPE_BAD_LENGTH`). For `CHAT_INPUT` it must match
//!   `^[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$` (`STRING_TYPE_REGEX` and
//!   `APPLICATION_COMMAND_INVALID_NAME`) and use the lowercase form of every letter that has
//!   one (`APPLICATION_COMMAND_INVALID_NAME`). `USER` and `MESSAGE` names may be mixed case and
//!   hold spaces.
//! - `description`: required for `CHAT_INPUT`, 1–100 characters; `USER` and `MESSAGE` commands
//!   have an empty one whatever is sent.
//! - `options` (`CHAT_INPUT` only): at most 25, each with a `type` 1–11, a name following the
//!   `CHAT_INPUT` naming rule and a 1–100 character description; sub-commands and groups are
//!   checked the same way one level down.
//! - Names are unique per type within the list: a repeat answers
//!   `APPLICATION_COMMANDS_DUPLICATE_NAME` at its index.
//!
//! Errors are 400 50035 Invalid Form Body with the `errors` tree keyed by the command's index
//! (`{"0": {"name": {"_errors": [...]}}}`). A list within the form but over a type's limit (100
//! `CHAT_INPUT`, 15 `USER`, 15 `MESSAGE`) answers 400 30032 "Maximum number of application
//! commands reached". Unparsable JSON answers 50109. Fields Discord ignores (`version`,
//! `application_id`, …, as twilight sends them) are ignored.

use serde_json::{Map, Value};

use super::error::{ApiError, FormErrors};
use crate::commands::{CommandSpec, WantedCommand, command_kind};

/// The most commands of each type one scope may hold.
const LIMITS: [(u8, usize); 3] = [
    (command_kind::CHAT_INPUT, 100),
    (command_kind::USER, 15),
    (command_kind::MESSAGE, 15),
];
const MAX_NAME: usize = 32;
const MAX_DESCRIPTION: usize = 100;
const MAX_OPTIONS: usize = 25;
/// Option types: `SUB_COMMAND` (1) … `ATTACHMENT` (11).
const OPTION_TYPES: std::ops::RangeInclusive<u64> = 1..=11;
const SUB_COMMAND: u64 = 1;
const SUB_COMMAND_GROUP: u64 = 2;

/// Whether `c` is in `[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]`. `\p{L}` is approximated by
/// Rust's `Alphabetic` (which adds letter numbers, already in `\p{N}`, and some combining
/// marks); the two scripts by their blocks, less the code points of script Common in them.
fn name_char(c: char) -> bool {
    matches!(c, '-' | '_' | '\'')
        || c.is_alphabetic()
        || c.is_numeric()
        || matches!(c,
            '\u{0900}'..='\u{0963}' | '\u{0966}'..='\u{097F}' | '\u{A8E0}'..='\u{A8FF}'
            | '\u{11B00}'..='\u{11B09}'
            | '\u{0E01}'..='\u{0E3A}' | '\u{0E40}'..='\u{0E5B}')
}

/// Whether no letter of `name` has a lowercase form other than itself.
fn lowercase(name: &str) -> bool {
    name.chars()
        .all(|c| c.to_lowercase().eq(std::iter::once(c)))
}

fn length_error(errors: &mut FormErrors, path: &[&str], text: &str, max: usize) {
    let len = text.chars().count();
    if len == 0 || len > max {
        errors.add(
            path,
            "BASE_TYPE_BAD_LENGTH",
            &format!("Must be between 1 and {max} in length."),
        );
    }
}

fn required(errors: &mut FormErrors, path: &[&str]) {
    errors.add(path, "BASE_TYPE_REQUIRED", "This field is required");
}

/// A required string field; `None` (and an error) when absent or not a string.
fn string_field(errors: &mut FormErrors, path: &[&str], value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => {
            required(errors, path);
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.add(path, "BASE_TYPE_STRING", "Must be a string.");
            None
        }
    }
}

/// Checks a `CHAT_INPUT` command or option name.
fn chat_input_name(errors: &mut FormErrors, path: &[&str], name: &str) {
    let len = name.chars().count();
    if len == 0 || len > MAX_NAME {
        length_error(errors, path, name, MAX_NAME);
    } else if !name.chars().all(name_char) {
        errors.add(
            path,
            "STRING_TYPE_REGEX",
            "String value did not match validation regex.",
        );
        errors.add(
            path,
            "APPLICATION_COMMAND_INVALID_NAME",
            "Command name is invalid",
        );
    } else if !lowercase(name) {
        errors.add(
            path,
            "APPLICATION_COMMAND_INVALID_NAME",
            "Command name is invalid",
        );
    }
}

fn dict_error(errors: &mut FormErrors, path: &[&str]) {
    errors.add(
        path,
        "DICT_TYPE_CONVERT",
        "Only dictionaries may be used in a DictType",
    );
}

fn list_error(errors: &mut FormErrors, path: &[&str]) {
    errors.add(
        path,
        "LIST_TYPE_CONVERT",
        "Only iterables may be used in a ListType",
    );
}

/// Checks `options` at `path` (a command's, or a sub-command's at `depth` 1 and 2).
fn check_options(errors: &mut FormErrors, path: &[&str], options: &[Value], depth: u8) {
    if options.len() > MAX_OPTIONS {
        errors.add(
            path,
            "BASE_TYPE_MAX_LENGTH",
            &format!("Must be {MAX_OPTIONS} or fewer in length."),
        );
    }
    for (i, option) in options.iter().enumerate() {
        let index = i.to_string();
        let mut at: Vec<&str> = path.to_vec();
        at.push(&index);
        let Some(option) = option.as_object() else {
            dict_error(errors, &at);
            continue;
        };
        let field = |name: &'static str| {
            let mut p = at.clone();
            p.push(name);
            p
        };
        let kind = option.get("type").and_then(Value::as_u64);
        match kind {
            Some(k) if OPTION_TYPES.contains(&k) => {}
            None if option.get("type").is_none_or(Value::is_null) => {
                required(errors, &field("type"))
            }
            _ => errors.add(
                &field("type"),
                "BASE_TYPE_CHOICES",
                "Value must be one of {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}.",
            ),
        }
        if let Some(name) = string_field(errors, &field("name"), option.get("name")) {
            chat_input_name(errors, &field("name"), &name);
        }
        if let Some(description) =
            string_field(errors, &field("description"), option.get("description"))
        {
            length_error(errors, &field("description"), &description, MAX_DESCRIPTION);
        }
        // Sub-commands hold options, groups hold sub-commands: one level of each at most.
        let nests = matches!(kind, Some(SUB_COMMAND | SUB_COMMAND_GROUP)) && depth < 2;
        match option.get("options") {
            None | Some(Value::Null) => {}
            Some(Value::Array(inner)) if nests => {
                check_options(errors, &field("options"), inner, depth + 1);
            }
            Some(Value::Array(_)) => {}
            Some(_) => list_error(errors, &field("options")),
        }
    }
}

/// An optional permission bit set: a decimal string or an integer.
fn permissions(errors: &mut FormErrors, path: &[&str], value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.clone())
        }
        Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
        Some(other) => {
            let raw = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned);
            errors.add(
                path,
                "NUMBER_TYPE_COERCE",
                &format!("Value \"{raw}\" is not int."),
            );
            None
        }
    }
}

/// An optional list of small integers from `choices` (`contexts`, `integration_types`).
fn choices_list(
    errors: &mut FormErrors,
    path: &[&str],
    value: Option<&Value>,
    choices: &[u64],
) -> Option<Value> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if !item.as_u64().is_some_and(|v| choices.contains(&v)) {
                    let index = i.to_string();
                    let mut at = path.to_vec();
                    at.push(&index);
                    let listed: Vec<String> = choices.iter().map(ToString::to_string).collect();
                    errors.add(
                        &at,
                        "BASE_TYPE_CHOICES",
                        &format!("Value must be one of {{{}}}.", listed.join(", ")),
                    );
                }
            }
            Some(Value::Array(items.clone()))
        }
        Some(_) => {
            list_error(errors, path);
            None
        }
    }
}

fn bool_field(errors: &mut FormErrors, path: &[&str], value: Option<&Value>) -> Option<bool> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errors.add(path, "BASE_TYPE_BOOLEAN", "Must be either true or false.");
            None
        }
    }
}

/// A localization dictionary as sent (`None` for `null` or absent).
fn localizations(errors: &mut FormErrors, path: &[&str], value: Option<&Value>) -> Option<Value> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(Value::Object(map.clone())),
        Some(_) => {
            dict_error(errors, path);
            None
        }
    }
}

/// The snowflake a command names as its `id`, if any (an unreadable one is ignored).
fn id_hint(command: &Map<String, Value>) -> Option<u64> {
    match command.get("id")? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// One command at index `index`; `None` when it has errors (added to `errors`).
fn command(
    errors: &mut FormErrors,
    index: &str,
    value: &Value,
    global: bool,
) -> Option<WantedCommand> {
    let Some(command) = value.as_object() else {
        dict_error(errors, &[index]);
        return None;
    };
    let before = errors.len();
    let kind = match command.get("type") {
        None | Some(Value::Null) => command_kind::CHAT_INPUT,
        Some(v) => match v.as_u64() {
            Some(k @ 1..=3) => u8::try_from(k).unwrap_or(command_kind::CHAT_INPUT),
            _ => {
                errors.add(
                    &[index, "type"],
                    "BASE_TYPE_CHOICES",
                    "Value must be one of {1, 2, 3}.",
                );
                command_kind::CHAT_INPUT
            }
        },
    };
    let chat_input = kind == command_kind::CHAT_INPUT;
    let name = string_field(errors, &[index, "name"], command.get("name")).unwrap_or_default();
    if chat_input {
        chat_input_name(errors, &[index, "name"], &name);
    } else {
        length_error(errors, &[index, "name"], &name, MAX_NAME);
    }
    let description = if chat_input {
        let description = string_field(errors, &[index, "description"], command.get("description"))
            .unwrap_or_default();
        length_error(
            errors,
            &[index, "description"],
            &description,
            MAX_DESCRIPTION,
        );
        description
    } else {
        String::new()
    };
    let options = match command.get("options") {
        Some(Value::Array(options)) if chat_input => {
            check_options(errors, &[index, "options"], options, 0);
            options.clone()
        }
        None | Some(Value::Null | Value::Array(_)) => Vec::new(),
        Some(_) => {
            list_error(errors, &[index, "options"]);
            Vec::new()
        }
    };
    let spec = CommandSpec {
        default_member_permissions: permissions(
            errors,
            &[index, "default_member_permissions"],
            command.get("default_member_permissions"),
        ),
        kind,
        name,
        name_localizations: localizations(
            errors,
            &[index, "name_localizations"],
            command.get("name_localizations"),
        ),
        description,
        description_localizations: localizations(
            errors,
            &[index, "description_localizations"],
            command.get("description_localizations"),
        ),
        dm_permission: bool_field(
            errors,
            &[index, "dm_permission"],
            command.get("dm_permission"),
        )
        .or(Some(true))
        .filter(|_| global),
        contexts: global.then(|| {
            choices_list(
                errors,
                &[index, "contexts"],
                command.get("contexts"),
                &[0, 1, 2],
            )
            .unwrap_or(Value::Null)
        }),
        integration_types: global.then(|| {
            choices_list(
                errors,
                &[index, "integration_types"],
                command.get("integration_types"),
                &[0, 1],
            )
            .unwrap_or_else(|| Value::Array(vec![0.into()]))
        }),
        options,
        nsfw: bool_field(errors, &[index, "nsfw"], command.get("nsfw")).unwrap_or(false),
    };
    (errors.len() == before).then(|| WantedCommand {
        id: id_hint(command),
        spec,
    })
}

/// Validates a bulk overwrite's body for the global scope (`global`) or a guild's.
///
/// # Errors
/// 50109 for unparsable JSON, 50035 with the `errors` tree, 30032 over a type's limit.
pub(crate) fn parse_overwrite(body: &[u8], global: bool) -> Result<Vec<WantedCommand>, ApiError> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Err(ApiError::invalid_json());
    };
    let Value::Array(items) = value else {
        let mut errors = FormErrors::default();
        list_error(&mut errors, &[]);
        return Err(errors.into());
    };
    let mut errors = FormErrors::default();
    let mut wanted = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let index = i.to_string();
        let Some(command) = command(&mut errors, &index, item, global) else {
            continue;
        };
        let repeated = wanted.iter().any(|w: &WantedCommand| {
            w.spec.kind == command.spec.kind && w.spec.name == command.spec.name
        });
        if repeated {
            errors.add(
                &[&index],
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                "Application command names must be unique",
            );
        }
        wanted.push(command);
    }
    errors.into_result()?;
    for (kind, limit) in LIMITS {
        if wanted.iter().filter(|w| w.spec.kind == kind).count() > limit {
            return Err(ApiError::too_many_commands(limit));
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn errors_of(body: &Value, global: bool) -> Value {
        let error = parse_overwrite(body.to_string().as_bytes(), global).unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        error.body().clone()
    }

    #[test]
    fn names_follow_discords_rule() {
        for good in [
            "ping",
            "set-nick",
            "o'clock",
            "日本語",
            "नमस्ते",
            "สวัสดี",
            "x_1",
            "ß",
        ] {
            let body = json!([{ "name": good, "description": "d" }]);
            assert!(
                parse_overwrite(body.to_string().as_bytes(), true).is_ok(),
                "{good}"
            );
        }
        for bad in ["Ping", "two words", "emoji🙂", "dot.name", "Ω"] {
            let e = errors_of(&json!([{ "name": bad, "description": "d" }]), true);
            assert_eq!(e["code"], 50035, "{bad}");
            let codes: Vec<&str> = e["errors"]["0"]["name"]["_errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["code"].as_str().unwrap())
                .collect();
            assert!(
                codes.contains(&"APPLICATION_COMMAND_INVALID_NAME"),
                "{bad}: {e}"
            );
        }
        let long = "a".repeat(33);
        let e = errors_of(&json!([{ "name": long, "description": "d" }]), true);
        assert_eq!(
            e["errors"]["0"]["name"]["_errors"][0],
            json!({"code": "BASE_TYPE_BAD_LENGTH", "message": "Must be between 1 and 32 in length."})
        );
        // USER and MESSAGE commands may be mixed case with spaces; their description is empty.
        let ok = parse_overwrite(
            json!([{ "name": "High Five", "type": 2, "description": "ignored" }])
                .to_string()
                .as_bytes(),
            true,
        )
        .unwrap();
        assert_eq!(ok[0].spec.description, "");
    }

    #[test]
    fn descriptions_types_options_and_duplicates() {
        let e = errors_of(&json!([{ "name": "ping" }]), true);
        assert_eq!(
            e["errors"]["0"]["description"]["_errors"][0]["code"],
            "BASE_TYPE_REQUIRED"
        );
        let e = errors_of(
            &json!([{ "name": "ping", "description": "x".repeat(101) }]),
            true,
        );
        assert_eq!(
            e["errors"]["0"]["description"]["_errors"][0]["code"],
            "BASE_TYPE_BAD_LENGTH"
        );
        let e = errors_of(
            &json!([{ "name": "ping", "description": "d", "type": 9 }]),
            true,
        );
        assert_eq!(
            e["errors"]["0"]["type"]["_errors"][0]["code"],
            "BASE_TYPE_CHOICES"
        );
        let e = errors_of(
            &json!([
                { "name": "ping", "description": "d" },
                { "name": "ping", "description": "again", "type": 2 },
                { "name": "ping", "description": "again" },
            ]),
            true,
        );
        assert_eq!(
            e["errors"],
            json!({"2": {"_errors": [{"code": "APPLICATION_COMMANDS_DUPLICATE_NAME", "message": "Application command names must be unique"}]}}),
            "the same name of another type is fine"
        );
        let e = errors_of(
            &json!([{ "name": "ping", "description": "d", "options": [
                { "type": 3, "name": "Who", "description": "d" },
                { "type": 1, "name": "sub", "description": "d", "options": [{ "type": 99, "name": "x", "description": "" }] },
            ] }]),
            true,
        );
        let options = &e["errors"]["0"]["options"];
        assert!(options["0"]["name"]["_errors"].is_array(), "{e}");
        assert!(
            options["1"]["options"]["0"]["type"]["_errors"].is_array(),
            "{e}"
        );
        assert!(
            options["1"]["options"]["0"]["description"]["_errors"].is_array(),
            "{e}"
        );
        let e = errors_of(&json!({ "name": "ping" }), true);
        assert_eq!(e["errors"]["_errors"][0]["code"], "LIST_TYPE_CONVERT");
        let e = errors_of(&json!(["ping"]), true);
        assert_eq!(e["errors"]["0"]["_errors"][0]["code"], "DICT_TYPE_CONVERT");
        let invalid = parse_overwrite(b"[{", true).unwrap_err();
        assert_eq!(invalid.body()["code"], 50109);
    }

    #[test]
    fn limits_per_type() {
        let many: Vec<Value> = (0..101)
            .map(|i| json!({ "name": format!("c{i}"), "description": "d" }))
            .collect();
        let e = errors_of(&Value::Array(many[..101].to_vec()), true);
        assert_eq!(
            e,
            json!({"message": "Maximum number of application commands reached (100)", "code": 30032})
        );
        let mut fine = many[..100].to_vec();
        fine.extend((0..15).map(|i| json!({ "name": format!("User {i}"), "type": 2 })));
        fine.extend((0..15).map(|i| json!({ "name": format!("Message {i}"), "type": 3 })));
        assert_eq!(
            parse_overwrite(Value::Array(fine.clone()).to_string().as_bytes(), true)
                .unwrap()
                .len(),
            130
        );
        fine.push(json!({ "name": "One too many", "type": 3 }));
        let e = errors_of(&Value::Array(fine), true);
        assert_eq!(e["code"], 30032);
    }

    #[test]
    fn discord_defaults_for_global_and_guild_commands() {
        let body = json!([{ "name": "ping", "description": "Replies with pong", "version": "1", "id": "123" }]);
        let global = parse_overwrite(body.to_string().as_bytes(), true).unwrap();
        let spec = &global[0].spec;
        assert_eq!(global[0].id, Some(123));
        assert_eq!(spec.kind, 1);
        assert_eq!(spec.dm_permission, Some(true));
        assert_eq!(spec.contexts, Some(Value::Null));
        assert_eq!(spec.integration_types, Some(json!([0])));
        assert!(!spec.nsfw);
        let guild = parse_overwrite(body.to_string().as_bytes(), false).unwrap();
        assert_eq!(guild[0].spec.dm_permission, None);
        assert_eq!(guild[0].spec.contexts, None);
        assert_eq!(guild[0].spec.integration_types, None);
        let with = json!([{ "name": "ping", "description": "d", "default_member_permissions": 8, "contexts": [0, 1], "nsfw": true }]);
        let spec = &parse_overwrite(with.to_string().as_bytes(), true).unwrap()[0].spec;
        assert_eq!(spec.default_member_permissions.as_deref(), Some("8"));
        assert_eq!(spec.contexts, Some(json!([0, 1])));
        assert!(spec.nsfw);
        let e = errors_of(
            &json!([{ "name": "ping", "description": "d", "contexts": [5], "default_member_permissions": "x" }]),
            true,
        );
        assert!(
            e["errors"]["0"]["contexts"]["0"]["_errors"].is_array(),
            "{e}"
        );
        assert!(
            e["errors"]["0"]["default_member_permissions"]["_errors"].is_array(),
            "{e}"
        );
    }
}
