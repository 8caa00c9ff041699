//! The bot token, which must never reach a log, an error or a `Debug` print.

use std::fmt;

/// A Discord bot token. `Debug` and `Display` print `<redacted>`; only [`Token::expose`] gives
/// the secret, so every place that sends it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token, dropping surrounding whitespace and a `Bot ` prefix.
    #[must_use]
    pub fn new(raw: &str) -> Self {
        let trimmed = raw.trim();
        let bare = trimmed.strip_prefix("Bot ").unwrap_or(trimmed);
        Self(bare.trim().to_owned())
    }

    /// The secret itself, to put on the wire.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value of an `Authorization` header: `Bot <token>`.
    #[must_use]
    pub fn authorization(&self) -> String {
        format!("Bot {}", self.0)
    }

    /// Whether the token is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn token_never_prints() {
        let token = Token::new("Bot  secret-value \n");
        assert_eq!(token.expose(), "secret-value");
        assert_eq!(token.authorization(), "Bot secret-value");
        assert!(!format!("{token:?}").contains("secret"));
        assert!(!format!("{token}").contains("secret"));
    }
}
