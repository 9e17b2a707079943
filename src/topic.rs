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

/// Longest topic name or filter, in bytes ([MQTT-4.7.3-3]).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix that makes a topic filter a shared subscription (MQTT 5.0 section 4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Checks what topic names and filters have in common: non-empty ([MQTT-4.7.3-1]), at most
/// 65 535 bytes ([MQTT-4.7.3-3]) and free of U+0000 ([MQTT-4.7.3-2]).
fn validate_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a topic name (as in PUBLISH): non-empty, no wildcards, no U+0000.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    validate_common(name)?;
    // [MQTT-3.3.2-2] / [MQTT-4.7.1-1] wildcards are for filters only, never in a topic name.
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter (as in SUBSCRIBE/UNSUBSCRIBE): non-empty, wildcards placed correctly.
///
/// A filter starting with `$share/` must be a well-formed shared subscription
/// `$share/{group}/{filter}` (see [`parse_shared`]), else [`TopicError::InvalidShare`].
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    validate_common(filter)?;
    if let Some(rest) = filter.strip_prefix(SHARE_PREFIX) {
        let (group, inner) = rest.split_once('/').ok_or(TopicError::InvalidShare)?;
        if !valid_share_name(group) {
            return Err(TopicError::InvalidShare);
        }
        // [MQTT-4.8.2-2] the '/' after the ShareName must be followed by a Topic Filter.
        return validate_plain_filter(inner).map_err(|_| TopicError::InvalidShare);
    }
    validate_plain_filter(filter)
}

/// [MQTT-4.8.2-1] the ShareName is at least one character long; [MQTT-4.8.2-2] it contains
/// none of `/`, `+`, `#`.
fn valid_share_name(group: &str) -> bool {
    !group.is_empty() && !group.bytes().any(|b| matches!(b, b'/' | b'+' | b'#'))
}

/// Checks the wildcard placement of a filter that is not (or no longer) `$share/`-prefixed.
fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    // Checked again for the inner filter of a shared subscription, which may be empty.
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            // [MQTT-4.7.1-2] '#' is alone in its level and that level is the last one.
            if level != "#" || levels.peek().is_some() {
                return Err(TopicError::MisplacedMultiLevelWildcard);
            }
        } else if level.contains('+') && level != "+" {
            // [MQTT-4.7.1-3] '+' occupies an entire level.
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Splits a shared subscription filter `$share/{group}/{filter}` (MQTT 5.0 section 4.8.2) into
/// its share group name and the topic filter that is matched against topic names.
///
/// Returns `None` when `filter` is not a well-formed shared subscription: it does not start with
/// `$share/`, the group is empty or contains `/`, `+` or `#` ([MQTT-4.8.2-1], [MQTT-4.8.2-2]),
/// or the inner filter is not a valid topic filter. Use [`validate_topic_filter`] to tell a
/// plain filter from a malformed shared one.
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    validate_common(filter).ok()?;
    let (group, inner) = filter.strip_prefix(SHARE_PREFIX)?.split_once('/')?;
    if !valid_share_name(group) || validate_plain_filter(inner).is_err() {
        return None;
    }
    Some((group, inner))
}

/// The reference matcher: does `filter` match `topic`? Implements `+`, `#`, and the rule that a
/// filter starting with a wildcard does not match a topic starting with `$` ([MQTT-4.7.2-1]).
/// Simple and obviously right; the subscription tree is tested against it.
///
/// `filter` is taken literally: a `$share/{group}/` prefix is not stripped (use
/// [`parse_shared`] first). On an invalid filter the result is unspecified (but no panic).
pub fn matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1] a filter starting with a wildcard never matches a topic starting with '$'.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    // [MQTT-4.7.3-4] levels are compared byte for byte, without any normalization.
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // '#' matches the rest, including no level at all: "a/#" matches "a" (4.7.1.2).
            (Some("#"), _) => return true,
            // '+' matches exactly one level, which may be empty (4.7.1.3).
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert_eq!(validate_topic_name("a"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name("a//b"), Ok(()));
        assert_eq!(validate_topic_name("/a"), Ok(()));
        assert_eq!(validate_topic_name("a/"), Ok(()));
        assert_eq!(validate_topic_name("$SYS/broker"), Ok(()));
        assert_eq!(validate_topic_name(" "), Ok(()));
        assert_eq!(validate_topic_name("ümlaut/日本"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a+b"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        let max = "x".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&max), Ok(()));
        let long = "x".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic_name(&long), Err(TopicError::TooLong));
    }

    #[test]
    fn topic_filters_valid() {
        for f in [
            "#",
            "+",
            "/",
            "a//b",
            "/a",
            "a/",
            "sport/tennis/player1/#",
            "sport/#",
            "sport/tennis/#",
            "+/+",
            "/+",
            "+/tennis/#",
            "sport/+/player1",
            "$SYS/#",
            "+/",
            "//#",
            "$share",
            "$shared/g/x",
            "$share/g/#",
            "$share/group/a/+/b",
            "$share/g/$SYS/x",
        ] {
            assert_eq!(validate_topic_filter(f), Ok(()), "{f:?}");
        }
    }

    #[test]
    fn topic_filters_invalid() {
        use TopicError::*;
        for (f, e) in [
            ("", Empty),
            ("sport/tennis#", MisplacedMultiLevelWildcard),
            ("sport/tennis/#/ranking", MisplacedMultiLevelWildcard),
            ("#/", MisplacedMultiLevelWildcard),
            ("##", MisplacedMultiLevelWildcard),
            ("a/#b", MisplacedMultiLevelWildcard),
            ("sport+", MisplacedSingleLevelWildcard),
            ("a/+b/c", MisplacedSingleLevelWildcard),
            ("++", MisplacedSingleLevelWildcard),
            ("a\0/#", NullCharacter),
            ("$share/", InvalidShare),
            ("$share/g", InvalidShare),
            ("$share//x", InvalidShare),
            ("$share/g/", InvalidShare),
            ("$share/g+/x", InvalidShare),
            ("$share/+/x", InvalidShare),
            ("$share/#/x", InvalidShare),
            ("$share/g#/x", InvalidShare),
            ("$share/g/a#", InvalidShare),
            ("$share/g/#/a", InvalidShare),
            ("$share/g/a+", InvalidShare),
        ] {
            assert_eq!(validate_topic_filter(f), Err(e), "{f:?}");
        }
        let long = format!("a/{}", "x".repeat(MAX_TOPIC_LEN));
        assert_eq!(validate_topic_filter(&long), Err(TooLong));
    }

    #[test]
    fn shared_filters() {
        assert_eq!(parse_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(
            parse_shared("$share/consumer1/sport/tennis/+"),
            Some(("consumer1", "sport/tennis/+"))
        );
        assert_eq!(parse_shared("$share/g/#"), Some(("g", "#")));
        assert_eq!(parse_shared("$share/g//"), Some(("g", "/")));
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share"), None);
        assert_eq!(parse_shared("$share/g"), None);
        assert_eq!(parse_shared("$share/g/"), None);
        assert_eq!(parse_shared("$share//a"), None);
        assert_eq!(parse_shared("$share/g+/a"), None);
        assert_eq!(parse_shared("$share/g/a/#/b"), None);
        assert_eq!(parse_shared("$share/g/a\0"), None);
    }

    #[test]
    fn spec_multi_level_examples() {
        // MQTT 3.1.1 section 4.7.1.2 non-normative examples.
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        assert!(!matches(f, "sport/tennis"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(!matches("sport/#", "sports"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("#", "/"));
        assert!(matches("#", "a"));
    }

    #[test]
    fn spec_single_level_examples() {
        // MQTT 3.1.1 section 4.7.1.3 non-normative examples.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", "finance"));
        assert!(matches("+/tennis/#", "sport/tennis/player1"));
        assert!(matches("+/tennis/#", "sport/tennis"));
        assert!(!matches("+/tennis/#", "sport/golf"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        assert!(matches("+/+/+", "//"));
        assert!(!matches("+/+/+", "/"));
    }

    #[test]
    fn empty_levels_are_levels() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a//b", "a/b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("/a", "/a"));
        assert!(!matches("/a", "a"));
        assert!(matches("a/", "a/"));
        assert!(!matches("a/", "a"));
        assert!(!matches("a", "a/"));
        assert!(matches("+/", "/"));
    }

    #[test]
    fn exact_and_case_sensitive() {
        // [MQTT-4.7.3-4] no normalization: comparison is exact and case sensitive.
        assert!(matches("ACCOUNTS", "ACCOUNTS"));
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("Accounts payable", "Accounts payable"));
    }

    #[test]
    fn dollar_topics() {
        // [MQTT-4.7.2-1] and the 4.7.2 examples.
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("#", "$SYS"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$"));
        assert!(!matches("+/x", "$/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/+/Clients", "$SYS/monitor/Clients"));
        // Only the first level counts: '$' further down is an ordinary character.
        assert!(matches("a/+", "a/$b"));
        assert!(matches("a/#", "a/$b/c"));
        assert!(matches("#", "a/$SYS"));
    }
}
