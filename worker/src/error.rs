//! What a handler returns when it fails, and whether trying again may help.

use std::error::Error as StdError;
use std::fmt;

/// A handler's failure: the cause, and whether the event should be tried again.
///
/// `?` on any error converts it into a *retryable* `HandlerError` (a REST call that timed out,
/// a gateway command told to retry later). Say [`HandlerError::fatal`] for failures that will
/// not go away (the event makes no sense to this bot): the event then goes to the dead-letter
/// subject at once instead of after `max_deliver` attempts.
///
/// ```
/// use shardyard_worker::HandlerError;
///
/// fn check(content: &str) -> Result<(), HandlerError> {
///     let n: u32 = content.parse().map_err(HandlerError::fatal)?;
///     if n == 0 {
///         return Err(HandlerError::retry("not yet"));
///     }
///     Ok(())
/// }
/// assert!(check("x").unwrap_err().is_fatal());
/// assert!(check("0").unwrap_err().is_retryable());
/// ```
pub struct HandlerError {
    retryable: bool,
    source: Box<dyn StdError + Send + Sync + 'static>,
}

impl HandlerError {
    /// A failure worth retrying: the event is handed back (NAK with backoff) until it has been
    /// delivered `max_deliver` times, then dead-lettered.
    pub fn retry(error: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self {
            retryable: true,
            source: error.into(),
        }
    }

    /// A failure retrying cannot fix: the event is dead-lettered at once.
    pub fn fatal(error: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self {
            retryable: false,
            source: error.into(),
        }
    }

    /// Whether the event should be tried again.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Whether the event goes to the dead-letter subject at once.
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        !self.retryable
    }

    /// The cause.
    #[must_use]
    pub fn source(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::retry(error)
    }
}

impl fmt::Display for HandlerError {
    /// The cause and its sources, joined by `: `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        let mut next = self.source.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("retryable", &self.retryable)
            .field("error", &self.to_string())
            .finish()
    }
}
