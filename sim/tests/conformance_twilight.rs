//! Conformance by a client nobody here wrote: twilight-gateway and twilight-http 0.18 talk to
//! the simulator as they would to Discord. Where a payload fails to deserialize, the simulator is
//! wrong, not the test.

mod common;

use std::time::{Duration, Instant};

use common::{TOKEN, config, http_get, http_post, start};
use serde_json::json;
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_model::gateway::payload::incoming::GuildCreate;
use twilight_model::id::Id;

fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn next_event(shard: &mut Shard) -> Event {
    loop {
        let item = tokio::time::timeout(
            Duration::from_secs(10),
            shard.next_event(EventTypeFlags::all()),
        )
        .await
        .expect("no event from the simulator within 10 s")
        .expect("shard stream ended");
        match item {
            Ok(Event::GatewayHello(_) | Event::GatewayHeartbeatAck | Event::GatewayHeartbeat) => {}
            Ok(event) => return event,
            Err(error) => {
                panic!("twilight could not receive an event from the simulator: {error:?}")
            }
        }
    }
}

#[tokio::test]
async fn twilight_gateway_identifies_receives_typed_events_and_resumes() {
    crypto();
    let sim = start(config(12)).await;
    let base = format!("http://{}", sim.addr());
    let intents = Intents::GUILDS
        | Intents::GUILD_MESSAGES
        | Intents::MESSAGE_CONTENT
        | Intents::GUILD_MEMBERS;
    let gateway_config = ConfigBuilder::new(TOKEN.to_owned(), intents)
        .proxy_url(format!("ws://{}/gateway", sim.addr()))
        .build();
    let mut shard = Shard::with_config(ShardId::new(0, 1), gateway_config);

    let Event::Ready(ready) = next_event(&mut shard).await else {
        panic!("first event must be READY")
    };
    assert_eq!(ready.guilds.len(), 12);
    assert_eq!(ready.shard, Some(ShardId::new(0, 1)));
    assert_eq!(
        ready.resume_gateway_url,
        format!("ws://{}/resume", sim.addr())
    );
    let mut created = 0;
    while created < 12 {
        match next_event(&mut shard).await {
            Event::GuildCreate(create) => {
                let GuildCreate::Available(guild) = *create else {
                    panic!("guilds are available")
                };
                assert!(!guild.channels.is_empty());
                assert!(!guild.roles.is_empty());
                assert!(!guild.members.is_empty());
                created += 1;
            }
            other => panic!("expected GUILD_CREATE, got {:?}", other.kind()),
        }
    }

    http_post(&base, "/_sim/say", json!({"content": "hello twilight"})).await;
    let message = loop {
        if let Event::MessageCreate(message) = next_event(&mut shard).await {
            break message;
        }
    };
    assert_eq!(message.content, "hello twilight");
    assert!(message.guild_id.is_some());
    assert!(message.member.is_some());

    // Background traffic of every kind deserializes too.
    http_post(&base, "/_sim/traffic", json!({"events_per_second": 400})).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut kinds = std::collections::BTreeSet::new();
    while Instant::now() < deadline {
        kinds.insert(format!("{:?}", next_event(&mut shard).await.kind()));
    }
    http_post(&base, "/_sim/traffic", json!({"events_per_second": 0})).await;
    assert!(kinds.len() >= 5, "only {kinds:?}");

    // A slash command arrives as a typed interaction.
    http_post(
        &base,
        "/_sim/interactions",
        json!({"name": "ping", "options": [{"name": "loud", "type": 5, "value": true}]}),
    )
    .await;
    let interaction = loop {
        if let Event::InteractionCreate(interaction) = next_event(&mut shard).await {
            break interaction;
        }
    };
    assert!(interaction.guild_id.is_some());
    assert!(interaction.member.is_some());

    // A forced RECONNECT: twilight resumes on resume_gateway_url and gets what it missed.
    http_post(&base, "/_sim/shards/0/reconnect", json!({})).await;
    http_post(
        &base,
        "/_sim/say",
        json!({"content": "said while reconnecting"}),
    )
    .await;
    let mut resumed = false;
    let missed = loop {
        match next_event(&mut shard).await {
            Event::Resumed => resumed = true,
            Event::MessageCreate(message) if message.content == "said while reconnecting" => {
                break message;
            }
            _ => {}
        }
    };
    assert_eq!(missed.content, "said while reconnecting");
    let stats = http_get(&base, "/_sim/stats").await;
    let shard_stats = &stats["shards"][0];
    assert_eq!(
        shard_stats["resumes"], 1,
        "twilight must resume, not re-identify"
    );
    assert_eq!(shard_stats["identifies"], 1);
    assert!(resumed || shard_stats["first_sent_in_replay"].as_u64().unwrap() >= 1);
    assert_eq!(stats["violations"], json!([]), "twilight broke no rule");
    sim.shutdown().await;
}

#[tokio::test]
async fn twilight_http_sends_messages_and_learns_the_rate_limits() {
    crypto();
    let sim = start(config(2)).await;
    let base = format!("http://{}", sim.addr());
    let client = twilight_http::Client::builder()
        .proxy(sim.addr().to_string(), true)
        .token(format!("Bot {TOKEN}"))
        .build();
    let channel = sim.state().bots[0]
        .world()
        .guilds
        .values()
        .next()
        .unwrap()
        .text_channels()
        .next()
        .unwrap()
        .id;

    let me = client
        .current_user()
        .await
        .expect("GET /users/@me")
        .model()
        .await
        .expect("CurrentUser deserializes");
    assert!(me.bot);
    let response = client
        .create_message(Id::new(channel))
        .content("hello from twilight")
        .await
        .expect("POST message");
    let headers: Vec<(String, String)> = response
        .headers()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    for wanted in [
        "x-ratelimit-bucket",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset-after",
        "x-ratelimit-scope",
    ] {
        assert!(
            headers.iter().any(|(k, _)| k == wanted),
            "{wanted} missing: {headers:?}"
        );
    }
    let message = response.model().await.expect("Message deserializes");
    assert_eq!(message.content, "hello from twilight");
    assert_eq!(message.channel_id, Id::new(channel));
    let guild = sim.state().bots[0].world().channel_guild[&channel];
    client
        .guild(Id::new(guild))
        .await
        .expect("GET guild")
        .model()
        .await
        .expect("Guild deserializes");
    client
        .guild_channels(Id::new(guild))
        .await
        .expect("GET guild channels")
        .model()
        .await
        .expect("channels deserialize");
    client
        .channel(Id::new(channel))
        .await
        .expect("GET channel")
        .model()
        .await
        .expect("Channel deserializes");
    client
        .gateway()
        .authed()
        .await
        .expect("GET gateway/bot")
        .model()
        .await
        .expect("BotConnectionInfo deserializes");

    // Twilight's rate limiter reads the headers: a burst to one channel is paced, never a 429.
    let burst = 8;
    for i in 0..burst {
        client
            .create_message(Id::new(channel))
            .content(&format!("burst {i}"))
            .await
            .expect("burst message");
    }
    let stats = http_get(&base, "/_sim/stats").await;
    assert_eq!(
        stats["violations"],
        json!([]),
        "twilight exceeded a limit: the headers are not what it expects"
    );
    let stored = http_get(&base, &format!("/_sim/channels/{channel}/messages")).await;
    assert_eq!(stored.as_array().map(Vec::len), Some(burst + 1));
    sim.shutdown().await;
}

/// What a bot does at start-up with twilight: read its application, register its commands
/// (global and for a guild), read them back; the models deserialize and a second identical
/// overwrite changes nothing.
#[tokio::test]
async fn twilight_http_reads_the_application_and_registers_commands() {
    use twilight_model::application::command::{Command, CommandType};

    crypto();
    let sim = start(config(2)).await;
    let base = format!("http://{}", sim.addr());
    let client = twilight_http::Client::builder()
        .proxy(sim.addr().to_string(), true)
        .token(format!("Bot {TOKEN}"))
        .build();
    let (application_id, guild) = {
        let world = sim.state().bots[0].world();
        (world.application_id, world.guild_ids()[0])
    };

    let application = client
        .current_user_application()
        .await
        .expect("GET /applications/@me")
        .model()
        .await
        .expect("Application deserializes");
    assert_eq!(application.id.get(), application_id);
    assert_eq!(application.verify_key.len(), 64);
    assert_eq!(
        application.bot.as_ref().map(|b| b.id.get()),
        Some(application_id)
    );
    assert!(application.owner.is_some());
    assert_eq!(application.approximate_guild_count, Some(2));

    #[allow(deprecated)]
    let ping = Command {
        application_id: None,
        contexts: None,
        default_member_permissions: None,
        description: "Replies with pong".to_owned(),
        description_localizations: None,
        dm_permission: None,
        guild_id: None,
        id: None,
        integration_types: None,
        kind: CommandType::ChatInput,
        name: "ping".to_owned(),
        name_localizations: None,
        nsfw: None,
        options: Vec::new(),
        version: Id::new(1),
    };
    let interaction = client.interaction(application.id);
    let commands = [ping];
    let global = interaction
        .set_global_commands(&commands)
        .await
        .expect("PUT global commands")
        .models()
        .await
        .expect("Commands deserialize");
    assert_eq!(global.len(), 1);
    assert_eq!(global[0].name, "ping");
    assert_eq!(global[0].application_id, Some(application.id));
    #[allow(deprecated)]
    let dm_permission = global[0].dm_permission;
    assert_eq!(dm_permission, Some(true));
    let again = interaction
        .set_global_commands(&commands)
        .await
        .expect("PUT again")
        .models()
        .await
        .expect("Commands deserialize");
    assert_eq!(again, global, "idempotent");
    let listed = interaction
        .global_commands()
        .await
        .expect("GET global commands")
        .models()
        .await
        .expect("Commands deserialize");
    assert_eq!(listed[0].id, global[0].id);
    let in_guild = interaction
        .set_guild_commands(Id::new(guild), &commands)
        .await
        .expect("PUT guild commands")
        .models()
        .await
        .expect("Commands deserialize");
    assert_eq!(in_guild[0].guild_id, Some(Id::new(guild)));
    let listed = interaction
        .guild_commands(Id::new(guild))
        .await
        .expect("GET guild commands")
        .models()
        .await
        .expect("Commands deserialize");
    assert_eq!(listed, in_guild);

    let truth = http_get(&base, "/_sim/commands").await;
    assert_eq!(truth["overwrites"], 3);
    assert_eq!(truth["global"][0]["name"], "ping");
    assert_eq!(
        truth["guilds"][guild.to_string()][0]["id"],
        in_guild[0].id.unwrap().to_string()
    );
    let stats = http_get(&base, "/_sim/stats").await;
    assert_eq!(stats["violations"], json!([]));
    sim.shutdown().await;
}

/// Payload by payload, with serde's exact complaint when a field is off.
#[test]
fn simulator_payloads_deserialize_into_twilight_model_types() {
    use twilight_model::channel::Channel;
    use twilight_model::channel::message::Message;
    use twilight_model::guild::Guild;

    let bot = shardyard_sim::bot::BotState::new(config(3).bots[0].clone(), 1);
    let world = bot.world();
    for guild in world.guilds.values() {
        let json = serde_json::to_string(&guild.create_payload(50, world.bot_user.id)).unwrap();
        serde_json::from_str::<Guild>(&json)
            .unwrap_or_else(|e| panic!("GUILD_CREATE: {e}\n{json}"));
        for channel in guild.channels.values() {
            let json = serde_json::to_string(channel).unwrap();
            serde_json::from_str::<Channel>(&json)
                .unwrap_or_else(|e| panic!("channel: {e}\n{json}"));
        }
    }
    drop(world);
    for _ in 0..2000 {
        let Some(dispatch) = shardyard_sim::traffic::generate(&bot) else {
            continue;
        };
        let json = std::str::from_utf8(&dispatch.event.data).unwrap();
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let full =
            serde_json::json!({"op": 0, "s": 1, "t": dispatch.event.kind, "d": value}).to_string();
        let deserializer =
            twilight_model::gateway::event::GatewayEventDeserializer::from_json(&full).unwrap();
        let mut json_de = serde_json::Deserializer::from_str(&full);
        use serde::de::DeserializeSeed;
        deserializer
            .deserialize(&mut json_de)
            .unwrap_or_else(|e| panic!("{}: {e}\n{json}", dispatch.event.kind));
        if dispatch.event.kind == "MESSAGE_CREATE" {
            serde_json::from_str::<Message>(json)
                .unwrap_or_else(|e| panic!("message: {e}\n{json}"));
        }
    }
}
