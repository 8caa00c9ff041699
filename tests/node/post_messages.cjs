// Posts messages through a Discord API base with @discordjs/rest, as a bot would with
// `new REST({ api: "http://<proxy>/api" })`. Used by tests/tests/rest_clients.rs.
//
// Usage: node post_messages.cjs API CHANNEL_ID PREFIX COUNT [TOKEN]
//   API      e.g. http://127.0.0.1:8080/api (the library appends /v10)
//   TOKEN    given: rest.setToken(TOKEN); absent: requests go without a token (auth: false)
//            and the proxy injects its own.
// POST_MESSAGES_DEFAULTS=1 uses the library's defaults (3 retries, a 15 s timeout) instead of
// retries: 0 and a 30 s timeout.
// Prints one JSON line: {"ids": [...], "contents": [...]}; exits 1 on any error.
const { REST } = require("@discordjs/rest");

async function main() {
  const [api, channel, prefix, countText, token] = process.argv.slice(2);
  const options = process.env.POST_MESSAGES_DEFAULTS
    ? { api, version: "10" }
    : { api, version: "10", retries: 0, timeout: 30_000 };
  const rest = new REST(options);
  if (token) rest.setToken(token);
  const count = Number(countText);
  // All at once: @discordjs/rest queues them per bucket in call order.
  const sent = await Promise.all(
    Array.from({ length: count }, (_, n) =>
      rest.post(`/channels/${channel}/messages`, {
        body: { content: `${prefix}-${n}` },
        auth: Boolean(token),
      }),
    ),
  );
  console.log(JSON.stringify({ ids: sent.map((m) => m.id), contents: sent.map((m) => m.content) }));
}

main().catch((error) => {
  console.error(String(error && error.stack ? error.stack : error));
  process.exit(1);
});
