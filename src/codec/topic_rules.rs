//! The topic name and topic filter rules the decoder enforces (section 4.7, and 4.8.2 for shared
//! subscriptions). Kept private to the codec so that it depends on nothing else in the crate.

use super::DecodeError;

/// Checks a topic name as carried in PUBLISH or as a will topic. `allow_empty` is for MQTT 5
/// PUBLISH, whose topic may be empty when a Topic Alias stands in for it.
pub(super) fn check_topic_name(name: &str, allow_empty: bool) -> Result<(), DecodeError> {
    // [MQTT-4.7.3-1] topic names are at least one character long
    if name.is_empty() && !allow_empty {
        return Err(DecodeError::EmptyTopic);
    }
    // [MQTT-3.3.2-2] / [MQTT-4.7.1-1] wildcards are not allowed in topic names
    if has_wildcard(name) {
        return Err(DecodeError::WildcardInTopicName);
    }
    Ok(())
}

/// True if `name` contains `+` or `#`.
pub(super) fn has_wildcard(name: &str) -> bool {
    // A branch-free fold rather than `any`, so that the compiler can vectorise the scan.
    name.bytes()
        .fold(false, |found, b| found | (b == b'+') | (b == b'#'))
}

/// Checks a topic filter as carried in SUBSCRIBE or UNSUBSCRIBE, including the
/// `$share/{ShareName}/{filter}` form. Returns whether it is a shared subscription.
pub(super) fn check_topic_filter(filter: &str) -> Result<bool, DecodeError> {
    match filter.strip_prefix("$share/") {
        Some(rest) => {
            // [MQTT-4.8.2-1] a shared subscription is $share/{ShareName}/{filter} with a
            // ShareName of at least one character; [MQTT-4.8.2-2] ShareName contains no
            // "/", "+" or "#" (the split below stops at the first "/")
            let (group, inner) = rest
                .split_once('/')
                .ok_or(DecodeError::InvalidTopicFilter)?;
            if group.is_empty() || has_wildcard(group) {
                return Err(DecodeError::InvalidTopicFilter);
            }
            check_plain_filter(inner)?;
            Ok(true)
        }
        None => {
            check_plain_filter(filter)?;
            Ok(false)
        }
    }
}

/// Checks a filter without the shared-subscription prefix.
fn check_plain_filter(filter: &str) -> Result<(), DecodeError> {
    let bytes = filter.as_bytes();
    // [MQTT-4.7.3-1] topic filters are at least one character long
    if bytes.is_empty() {
        return Err(DecodeError::InvalidTopicFilter);
    }
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'+' && b != b'#' {
            continue;
        }
        let starts_level = i == 0 || bytes.get(i - 1) == Some(&b'/');
        let next = bytes.get(i + 1);
        let ends_level = next.is_none() || next == Some(&b'/');
        // [MQTT-4.7.1-3] '+' occupies an entire level;
        // [MQTT-4.7.1-2] '#' occupies an entire level and is the last character
        let ok = match b {
            b'+' => starts_level && ends_level,
            _ => starts_level && next.is_none(),
        };
        if !ok {
            return Err(DecodeError::InvalidTopicFilter);
        }
    }
    Ok(())
}
