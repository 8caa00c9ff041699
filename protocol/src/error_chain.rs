//! An error and its causes on one line, as every service logs them and as the operator writes
//! them into a status. It lives here because every crate depends on this one.

/// `error: cause: cause of the cause …`.
#[must_use]
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("connecting to nats://n:4222")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_follows_its_error() {
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            error_chain(&error),
            "connecting to nats://n:4222: connection refused"
        );
    }
}
