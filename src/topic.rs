//! Topic names and topic filters: validation and the reference matching rules (MQTT 3.1.1
//! section 4.7, MQTT 5.0 section 4.7).

use thiserror::Error;

/// Why a string is not a valid topic name or topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    /// Empty string ([MQTT-4.7.3-1]).
    #[error("[MQTT-4.7.3-1] topic is empty")]
    Empty,
    /// A wildcard character in a topic name ([MQTT-3.3.2-2], [MQTT-4.7.1-1]).
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    WildcardInName,
    /// `#` not alone in the last level ([MQTT-4.7.1-2]).
    #[error("[MQTT-4.7.1-2] '#' must be the last character and occupy a whole level")]
    MisplacedMultiLevelWildcard,
    /// `+` not occupying a whole level ([MQTT-4.7.1-3]).
    #[error("[MQTT-4.7.1-3] '+' must occupy a whole level")]
    MisplacedSingleLevelWildcard,
    /// Contains U+0000 ([MQTT-4.7.3-2]).
    #[error("[MQTT-4.7.3-2] topic contains U+0000")]
    NullCharacter,
    /// Longer than 65 535 bytes ([MQTT-4.7.3-3]).
    #[error("[MQTT-4.7.3-3] topic longer than 65535 bytes")]
    TooLong,
    /// A `$share/` filter that is not `$share/{group}/{filter}` with a valid group and filter.
    #[error("[MQTT-4.8.2-1] invalid shared subscription filter")]
    InvalidShare,
}

/// Checks a topic name (as in PUBLISH): non-empty, no wildcards, no U+0000.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let _ = name;
    todo!("topic helper")
}

/// Checks a topic filter (as in SUBSCRIBE/UNSUBSCRIBE): non-empty, wildcards placed correctly.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    let _ = filter;
    todo!("topic helper")
}

/// The reference matcher: does `filter` match `topic`? Implements `+`, `#`, and the rule that a
/// filter starting with a wildcard does not match a topic starting with `$` ([MQTT-4.7.2-1]).
/// Simple and obviously right; the subscription tree is tested against it.
pub fn matches(filter: &str, topic: &str) -> bool {
    let _ = (filter, topic);
    todo!("topic helper")
}

/// Splits a shared-subscription filter `$share/{group}/{filter}` into group and filter;
/// `None` if `filter` is not a (valid) shared filter.
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, inner) = rest.split_once('/')?;
    Some((group, inner))
}
