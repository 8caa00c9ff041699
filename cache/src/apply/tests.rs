use serde_json::{Value, json};

use super::*;

const G: u64 = 100;

fn guild_create() -> Value {
    json!({
        "id": G.to_string(), "name": "amber", "owner_id": "7", "joined_at": "2024-01-01T00:00:00Z",
        "large": false, "unavailable": false, "member_count": 2,
        "roles": [
            {"id": G.to_string(), "name": "@everyone", "position": 0, "permissions": "1"},
            {"id": "200", "name": "mods", "position": 1, "permissions": "8"}
        ],
        "emojis": [{"id": "900", "name": "pog"}],
        "channels": [
            {"id": "300", "type": 0, "name": "general", "position": 0},
            {"id": "301", "type": 2, "name": "voice", "position": 1}
        ],
        "threads": [{"id": "302", "type": 11, "name": "t", "parent_id": "300", "guild_id": G.to_string()}],
        "members": [
            {"user": {"id": "7", "username": "owner"}, "nick": null, "roles": ["200"], "joined_at": "x", "deaf": false, "mute": false},
            {"user": {"id": "8", "username": "bot", "bot": true}, "nick": "b", "roles": [], "joined_at": "y", "deaf": false, "mute": false}
        ],
        "voice_states": [{"user_id": "7", "channel_id": "301", "session_id": "s", "member": {"roles": []}}],
        "presences": [{"user": {"id": "7"}, "status": "online"}]
    })
}

fn apply(store: &mut MemoryStore, t: &str, payload: &Value, seq: u64) -> Writes {
    store
        .apply(t, payload.to_string().as_bytes(), seq, Resources::DEFAULT)
        .expect("a well-formed payload")
}

fn get(store: &MemoryStore, key: &str) -> Option<Value> {
    store
        .values
        .get(key)
        .map(|v| serde_json::from_slice(v).expect("stored values are JSON"))
}

fn guild(store: &MemoryStore) -> Value {
    get(store, &keys::guild(G)).expect("the guild is stored")
}

fn created() -> MemoryStore {
    let mut store = MemoryStore::default();
    apply(&mut store, "GUILD_CREATE", &guild_create(), 1);
    store
}

#[test]
fn guild_create_stores_each_part_under_its_own_key() {
    let store = created();
    let g = guild(&store);
    for array in GUILD_ARRAYS {
        assert!(g.get(array).is_none(), "{array} left in the guild value");
    }
    assert_eq!(g["name"], "amber");
    assert_eq!(g["joined_at"], "2024-01-01T00:00:00Z");
    assert_eq!(g["channel_ids"], json!(["300", "301", "302"]));
    assert_eq!(g["role_ids"], json!(["100", "200"]));
    assert_eq!(g["member_count"], 2);
    assert_eq!(g["unavailable"], false);
    assert_eq!(g["shardyard_seq"], 1);

    let general = get(&store, "channel.300").unwrap();
    assert_eq!(
        general["guild_id"], "100",
        "GUILD_CREATE channels get their guild"
    );
    assert_eq!(general["name"], "general");
    assert_eq!(get(&store, "channel.302").unwrap()["parent_id"], "300");
    assert_eq!(get(&store, "role.100.200").unwrap()["name"], "mods");

    let member = get(&store, "member.100.7").unwrap();
    assert!(member.get("user").is_none());
    assert_eq!(member["user_id"], "7");
    assert_eq!(member["roles"], json!(["200"]));
    assert_eq!(get(&store, "user.8").unwrap()["bot"], true);
    assert_eq!(get(&store, "emojis.100").unwrap()[0]["name"], "pog");

    let voice = get(&store, "voice.100.7").unwrap();
    assert_eq!(voice["channel_id"], "301");
    assert_eq!(voice["guild_id"], "100");
    assert!(voice.get("member").is_none());
    assert!(
        get(&store, "presence.100.7").is_none(),
        "presences are off by default"
    );
}

#[test]
fn channel_create_update_delete_keep_the_guild_index() {
    let mut store = created();
    let channel = json!({"id": "310", "type": 0, "name": "new", "guild_id": "100"});
    apply(&mut store, "CHANNEL_CREATE", &channel, 2);
    assert_eq!(
        guild(&store)["channel_ids"],
        json!(["300", "301", "302", "310"])
    );
    let updated =
        json!({"id": "310", "type": 0, "name": "renamed", "topic": "t", "guild_id": "100"});
    apply(&mut store, "CHANNEL_UPDATE", &updated, 3);
    assert_eq!(get(&store, "channel.310").unwrap(), updated);
    apply(&mut store, "CHANNEL_DELETE", &updated, 4);
    assert!(get(&store, "channel.310").is_none());
    assert_eq!(guild(&store)["channel_ids"], json!(["300", "301", "302"]));
    assert_eq!(guild(&store)["shardyard_seq"], 4);
}

#[test]
fn threads_are_channels_and_go_with_their_parent() {
    let mut store = created();
    assert_eq!(guild(&store)["thread_parents"], json!({"302": "300"}));
    let thread = json!({"id": "320", "type": 11, "parent_id": "300", "guild_id": "100",
        "name": "th", "newly_created": true});
    apply(&mut store, "THREAD_CREATE", &thread, 2);
    let stored = get(&store, "channel.320").unwrap();
    assert_eq!(stored["name"], "th");
    assert!(
        stored.get("newly_created").is_none(),
        "a fact about the event"
    );
    let sync = json!({"guild_id": "100", "threads": [{"id": "321", "type": 11, "parent_id": "301"}], "members": []});
    apply(&mut store, "THREAD_LIST_SYNC", &sync, 3);
    assert_eq!(get(&store, "channel.321").unwrap()["guild_id"], "100");
    apply(
        &mut store,
        "THREAD_UPDATE",
        &json!({"id": "320", "type": 11, "parent_id": "300", "guild_id": "100", "name": "renamed"}),
        4,
    );
    assert_eq!(get(&store, "channel.320").unwrap()["name"], "renamed");
    assert_eq!(
        guild(&store)["thread_parents"],
        json!({"302": "300", "320": "300", "321": "301"})
    );
    apply(
        &mut store,
        "THREAD_DELETE",
        &json!({"id": "321", "guild_id": "100", "parent_id": "301", "type": 11}),
        5,
    );
    assert!(get(&store, "channel.321").is_none());
    // Deleting a channel deletes its threads: Discord sends no THREAD_DELETE for them.
    apply(
        &mut store,
        "CHANNEL_DELETE",
        &json!({"id": "300", "type": 0, "guild_id": "100"}),
        6,
    );
    for gone in ["channel.300", "channel.302", "channel.320"] {
        assert!(get(&store, gone).is_none(), "{gone} left");
    }
    assert_eq!(guild(&store)["channel_ids"], json!(["301"]));
    assert_eq!(guild(&store)["thread_parents"], json!({}));
}

#[test]
fn roles_are_created_updated_and_deleted() {
    let mut store = created();
    let role = json!({"id": "210", "name": "new", "color": 1, "position": 2, "permissions": "0"});
    apply(
        &mut store,
        "GUILD_ROLE_CREATE",
        &json!({"guild_id": "100", "role": role}),
        2,
    );
    assert_eq!(get(&store, "role.100.210").unwrap(), role);
    assert_eq!(guild(&store)["role_ids"], json!(["100", "200", "210"]));
    let role = json!({"id": "210", "name": "new", "color": 2, "position": 2, "permissions": "0"});
    apply(
        &mut store,
        "GUILD_ROLE_UPDATE",
        &json!({"guild_id": "100", "role": role}),
        3,
    );
    assert_eq!(get(&store, "role.100.210").unwrap()["color"], 2);
    apply(
        &mut store,
        "GUILD_ROLE_DELETE",
        &json!({"guild_id": "100", "role_id": "210"}),
        4,
    );
    assert!(get(&store, "role.100.210").is_none());
    assert_eq!(guild(&store)["role_ids"], json!(["100", "200"]));
}

#[test]
fn members_join_change_and_leave_with_the_count() {
    let mut store = created();
    let member = json!({"guild_id": "100", "user": {"id": "9", "username": "new"}, "nick": null,
        "roles": [], "joined_at": "z", "deaf": false, "mute": true});
    apply(&mut store, "GUILD_MEMBER_ADD", &member, 2);
    assert_eq!(guild(&store)["member_count"], 3);
    assert_eq!(get(&store, "user.9").unwrap()["username"], "new");
    assert!(
        get(&store, "member.100.9")
            .unwrap()
            .get("guild_id")
            .is_none()
    );
    // An update without `mute` keeps the stored one (Discord may leave optional fields out).
    let update = json!({"guild_id": "100", "user": {"id": "9", "username": "renamed"},
        "nick": "n", "roles": ["200"], "joined_at": "z"});
    apply(&mut store, "GUILD_MEMBER_UPDATE", &update, 3);
    let stored = get(&store, "member.100.9").unwrap();
    assert_eq!(stored["nick"], "n");
    assert_eq!(stored["mute"], true);
    assert_eq!(stored["roles"], json!(["200"]));
    assert_eq!(get(&store, "user.9").unwrap()["username"], "renamed");
    assert_eq!(guild(&store)["member_count"], 3, "updates don't count");
    apply(
        &mut store,
        "GUILD_MEMBER_REMOVE",
        &json!({"guild_id": "100", "user": {"id": "7", "username": "owner"}}),
        4,
    );
    assert!(get(&store, "member.100.7").is_none());
    assert!(
        get(&store, "voice.100.7").is_none(),
        "a member who left is in no voice channel"
    );
    assert_eq!(guild(&store)["member_count"], 2);
}

#[test]
fn member_chunks_store_members_without_counting() {
    let mut store = created();
    let chunk = json!({"guild_id": "100", "chunk_index": 0, "chunk_count": 1, "members": [
        {"user": {"id": "20"}, "roles": [], "joined_at": "a"},
        {"user": {"id": "21"}, "roles": [], "joined_at": "b"}
    ]});
    apply(&mut store, "GUILD_MEMBERS_CHUNK", &chunk, 2);
    assert_eq!(get(&store, "member.100.21").unwrap()["user_id"], "21");
    assert_eq!(guild(&store)["member_count"], 2);
}

#[test]
fn an_outage_keeps_the_guild_and_marks_it_unavailable() {
    let mut store = created();
    apply(
        &mut store,
        "GUILD_DELETE",
        &json!({"id": "100", "unavailable": true}),
        2,
    );
    let g = guild(&store);
    assert_eq!(g["unavailable"], true);
    assert_eq!(g["name"], "amber");
    assert!(get(&store, "channel.300").is_some());
    assert!(get(&store, "member.100.7").is_some());
    // It comes back, minus a channel and a role deleted meanwhile.
    let mut back = guild_create();
    back["channels"].as_array_mut().unwrap().remove(1);
    back["roles"].as_array_mut().unwrap().remove(1);
    apply(&mut store, "GUILD_CREATE", &back, 3);
    assert_eq!(guild(&store)["unavailable"], false);
    assert!(get(&store, "channel.301").is_none());
    assert!(get(&store, "role.100.200").is_none());
    assert_eq!(guild(&store)["channel_ids"], json!(["300", "302"]));
}

#[test]
fn removal_deletes_the_guild_and_everything_in_it() {
    let mut store = created();
    // Another guild's keys stay.
    let mut other = guild_create();
    other["id"] = json!("101");
    other["channels"] = json!([{"id": "400", "type": 0}]);
    other["threads"] = json!([]);
    other["roles"] = json!([{"id": "101", "name": "@everyone"}]);
    apply(&mut store, "GUILD_CREATE", &other, 2);
    apply(
        &mut store,
        "USER_UPDATE",
        &json!({"id": "8", "username": "bot2", "bot": true}),
        3,
    );
    apply(&mut store, "GUILD_DELETE", &json!({"id": "100"}), 4);
    let left: Vec<&String> = store
        .values
        .keys()
        .filter(|k| k.contains("100") && !k.starts_with("user."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(get(&store, "guild.101").is_some());
    assert!(get(&store, "member.101.7").is_some());
    assert!(get(&store, "channel.400").is_some());
    assert_eq!(
        get(&store, "user.8").unwrap()["username"],
        "bot2",
        "users are global"
    );
}

#[test]
fn voice_states_come_and_go() {
    let mut store = created();
    let join = json!({"guild_id": "100", "user_id": "8", "channel_id": "301", "session_id": "x",
        "member": {"user": {"id": "8"}, "roles": []}});
    apply(&mut store, "VOICE_STATE_UPDATE", &join, 2);
    assert_eq!(get(&store, "voice.100.8").unwrap()["channel_id"], "301");
    assert!(get(&store, "voice.100.8").unwrap().get("member").is_none());
    let leave = json!({"guild_id": "100", "user_id": "8", "channel_id": null, "session_id": "x"});
    apply(&mut store, "VOICE_STATE_UPDATE", &leave, 3);
    assert!(get(&store, "voice.100.8").is_none());
}

#[test]
fn ready_user_update_and_emojis() {
    let mut store = MemoryStore::default();
    apply(
        &mut store,
        "READY",
        &json!({"v": 10, "user": {"id": "8", "username": "bot"}, "guilds": [], "session_id": "s"}),
        1,
    );
    assert_eq!(get(&store, "user.8").unwrap()["username"], "bot");
    apply(
        &mut store,
        "GUILD_EMOJIS_UPDATE",
        &json!({"guild_id": "100", "emojis": []}),
        2,
    );
    assert_eq!(get(&store, "emojis.100").unwrap(), json!([]));
}

#[test]
fn presences_only_when_enabled() {
    let presence = json!({"user": {"id": "7"}, "guild_id": "100", "status": "idle"});
    let mut store = MemoryStore::default();
    apply(&mut store, "PRESENCE_UPDATE", &presence, 1);
    assert!(store.values.is_empty());
    store
        .apply(
            "PRESENCE_UPDATE",
            presence.to_string().as_bytes(),
            2,
            Resources::ALL,
        )
        .unwrap();
    assert_eq!(get(&store, "presence.100.7").unwrap()["status"], "idle");
    assert!(
        !Resources::DEFAULT
            .event_types()
            .contains(&"PRESENCE_UPDATE")
    );
    assert!(Resources::ALL.event_types().contains(&"PRESENCE_UPDATE"));
}

#[test]
fn resources_limit_what_is_written() {
    let resources = Resources::parse("roles").unwrap();
    assert!(resources.contains(Resource::Guilds), "guilds are always on");
    let mut store = MemoryStore::default();
    store
        .apply(
            "GUILD_CREATE",
            guild_create().to_string().as_bytes(),
            1,
            resources,
        )
        .unwrap();
    let kinds: BTreeSet<&str> = store
        .values
        .keys()
        .map(|k| k.split('.').next().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["guild", "role"]));
    assert_eq!(guild(&store)["channel_ids"], json!([]));
    assert!(resources.event_types().contains(&"GUILD_ROLE_DELETE"));
    assert!(!resources.event_types().contains(&"CHANNEL_CREATE"));
    assert!(Resources::parse("guilds,bogus").is_err());
    assert_eq!(
        format!("{:?}", Resources::parse(" channels , members").unwrap()),
        "guilds,channels,members"
    );
}

fn storm() -> Vec<(&'static str, Value)> {
    vec![
        ("GUILD_CREATE", guild_create()),
        (
            "CHANNEL_CREATE",
            json!({"id": "310", "type": 0, "guild_id": "100"}),
        ),
        (
            "GUILD_MEMBER_ADD",
            json!({"guild_id": "100", "user": {"id": "9"}, "roles": [], "joined_at": "z"}),
        ),
        (
            "GUILD_ROLE_CREATE",
            json!({"guild_id": "100", "role": {"id": "210", "name": "r"}}),
        ),
        (
            "CHANNEL_UPDATE",
            json!({"id": "310", "type": 0, "guild_id": "100", "topic": "t"}),
        ),
        (
            "GUILD_MEMBER_UPDATE",
            json!({"guild_id": "100", "user": {"id": "9"}, "roles": ["210"], "nick": "x", "joined_at": "z"}),
        ),
        (
            "GUILD_ROLE_DELETE",
            json!({"guild_id": "100", "role_id": "200"}),
        ),
        (
            "GUILD_MEMBER_REMOVE",
            json!({"guild_id": "100", "user": {"id": "8"}}),
        ),
        (
            "CHANNEL_DELETE",
            json!({"id": "301", "type": 2, "guild_id": "100"}),
        ),
        (
            "GUILD_UPDATE",
            json!({"id": "100", "name": "renamed", "owner_id": "7"}),
        ),
        (
            "THREAD_CREATE",
            json!({"id": "330", "type": 11, "parent_id": "310", "guild_id": "100", "newly_created": true}),
        ),
        (
            "CHANNEL_DELETE",
            json!({"id": "310", "type": 0, "guild_id": "100"}),
        ),
        (
            "GUILD_MEMBER_ADD",
            json!({"guild_id": "100", "user": {"id": "10"}, "roles": [], "joined_at": "w"}),
        ),
    ]
}

fn run(store: &mut MemoryStore, events: &[(&'static str, Value)], first_seq: u64) {
    for (i, (t, payload)) in events.iter().enumerate() {
        apply(store, t, payload, first_seq + i as u64);
    }
}

#[test]
fn every_event_applied_twice_leaves_the_state_of_once() {
    let events = storm();
    let mut once = MemoryStore::default();
    run(&mut once, &events, 1);
    let mut twice = MemoryStore::default();
    for (i, (t, payload)) in events.iter().enumerate() {
        apply(&mut twice, t, payload, 1 + i as u64);
        apply(&mut twice, t, payload, 1 + i as u64);
    }
    assert_eq!(once, twice);
    let g = guild(&once);
    assert_eq!(g["member_count"], 3);
    assert_eq!(g["name"], "renamed");
    assert_eq!(
        g["joined_at"], "2024-01-01T00:00:00Z",
        "GUILD_UPDATE merges"
    );
    assert_eq!(g["role_ids"], json!(["100", "210"]));
    assert_eq!(g["channel_ids"], json!(["300", "302"]));
    assert!(get(&once, "channel.330").is_none());
}

#[test]
fn replaying_the_whole_stream_leaves_the_same_state() {
    let events = storm();
    let mut store = MemoryStore::default();
    run(&mut store, &events, 1);
    let after_once = store.clone();
    run(&mut store, &events, 1);
    assert_eq!(store, after_once);
}

#[test]
fn a_crash_between_writes_converges_on_redelivery() {
    let events = storm();
    let mut reference = MemoryStore::default();
    run(&mut reference, &events, 1);
    // Every event is first applied only partly (its ops but not the guild's commit, or only
    // half its ops), then redelivered whole.
    let mut store = MemoryStore::default();
    for (i, (t, payload)) in events.iter().enumerate() {
        let seq = 1 + i as u64;
        let bytes = payload.to_string();
        let event = parse(t, bytes.as_bytes()).unwrap().unwrap();
        let writes = event.apply(seq, Resources::DEFAULT, &store.current(&event.reads()));
        store.write(&writes.ops[..writes.ops.len() / 2]);
        apply(&mut store, t, payload, seq);
    }
    assert_eq!(store, reference);
}

#[test]
fn malformed_payloads_are_errors_not_panics() {
    let mut store = created();
    let before = store.clone();
    for (t, payload) in [
        ("GUILD_CREATE", "not json"),
        ("GUILD_CREATE", r#"{"name": "no id"}"#),
        ("CHANNEL_CREATE", r#"{"id": true, "guild_id": "100"}"#),
        ("GUILD_MEMBER_ADD", r#"{"guild_id": "100"}"#),
        (
            "GUILD_MEMBER_ADD",
            r#"{"guild_id": "100", "user": {"id": "x"}}"#,
        ),
        ("GUILD_ROLE_DELETE", r#"{"guild_id": "100", "role_id": []}"#),
        ("GUILD_DELETE", "[1, 2]"),
        ("GUILD_DELETE", r#"{"id": "100", "unavailable": "yes"}"#),
        ("VOICE_STATE_UPDATE", "{}"),
        ("PRESENCE_UPDATE", "null"),
        ("READY", ""),
    ] {
        let error = store
            .apply(t, payload.as_bytes(), 2, Resources::ALL)
            .expect_err(payload);
        assert!(error.to_string().contains(t), "{error}");
        assert!(["malformed", "missing_field"].contains(&error.kind()));
    }
    assert_eq!(store, before, "nothing was written");
    assert_eq!(
        store
            .apply(
                "GUILD_MEMBER_ADD",
                br#"{"guild_id": "100"}"#,
                2,
                Resources::ALL
            )
            .unwrap_err()
            .kind(),
        "missing_field"
    );
}

#[test]
fn other_events_are_not_the_caches() {
    assert!(parse("MESSAGE_CREATE", b"not even json").unwrap().is_none());
    assert!(parse("TYPING_START", b"{}").unwrap().is_none());
}

#[test]
fn a_stored_value_that_is_not_ours_is_rewritten() {
    let mut store = MemoryStore::default();
    store.values.insert(keys::guild(G), b"garbage".to_vec());
    apply(&mut store, "GUILD_CREATE", &guild_create(), 1);
    assert_eq!(guild(&store)["member_count"], 2);
}
