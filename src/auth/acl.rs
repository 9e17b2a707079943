//! Topic access control in Mosquitto's `acl_file` format.
//!
//! # File format
//!
//! One statement per line; `#` starts a comment line, blank lines are ignored.
//!
//! ```text
//! # Rules before the first `user` line are for clients without a user name.
//! topic read $SYS/#
//!
//! # Rules after a `user` line are for clients with that user name.
//! user roger
//! topic foo/bar
//! topic deny foo/bar/secret
//!
//! # Pattern rules apply to every client, wherever they stand.
//! pattern readwrite devices/%c/#
//! pattern read users/%u/inbox
//! ```
//!
//! * `topic [read|write|readwrite|deny] <filter>`: the access word is optional (default
//!   `readwrite`); the filter is the rest of the line, trimmed, so it may contain spaces, but
//!   then the access word is required: a line with a single word after `topic` takes that word
//!   as the filter, as Mosquitto does (`topic read` grants `readwrite` on the topic `read`).
//!   `+` and `#` are wildcards as in subscriptions; the filter must be a valid topic filter
//!   (as in SUBSCRIBE, so one starting with `$share/` must be a well-formed shared filter).
//! * `user <name>`: the following `topic` lines are for clients whose CONNECT user name is
//!   `<name>` (the rest of the line, trimmed). Several sections for one name add up.
//!   `topic` lines before the first `user` line are for anonymous clients (no user name) only,
//!   as in Mosquitto. A client with a user name that has no section (an empty user name
//!   included) gets only the pattern rules.
//! * `pattern [read|write|readwrite|deny] <filter>`: like `topic`, for every client, with a
//!   level that is exactly `%c` standing for the client identifier and exactly `%u` for the
//!   user name. `%c`/`%u` must be the whole level (`dev-%c` is an error, as Mosquitto's
//!   documentation says it must be the only text of its level). A pattern with `%u` does not
//!   apply to anonymous clients.
//!
//! Keywords are case sensitive. Tokens are separated by spaces or tabs (Mosquitto: spaces
//! only), and a comment may be indented (Mosquitto: `#` must be the first character).
//! Unknown keywords, unknown access words, a missing filter or user name, and invalid filters
//! are errors naming the line ([`AclError`]).
//!
//! # Semantics
//!
//! When an ACL is in force, everything is denied unless a rule grants it, and a `deny` rule
//! that applies overrides every grant (the documentation: "Any `deny` topics are handled
//! before topics that grant read/write access"). The rules that apply to a client are those of
//! its section (the anonymous one when it has no user name) and all patterns.
//!
//! * [`Acl::check_publish`]: write access; a rule applies when its filter matches the topic
//!   name.
//! * [`Acl::check_receive`]: read access, checked for every message delivered (retained
//!   messages and wills included), the way Mosquitto checks each delivery.
//! * [`Acl::check_subscribe`]: read access; a rule applies when its filter *covers* the
//!   subscription filter, i.e. matches every topic the subscription can match (rule `a/#`
//!   covers `a/b/+`, rule `a/+` does not cover `a/#`), like `mosquitto_sub_matches_acl`. A
//!   `deny` rule refuses a subscription it covers; a subscription that merely overlaps a
//!   denied area (`#` with `topic deny secret/#`) is accepted, and [`Acl::check_receive`]
//!   keeps the denied messages from it, so the broker must call [`Acl::check_receive`] on
//!   every delivery. A shared subscription `$share/{group}/{filter}` is checked by its
//!   `{filter}` (MQTT 5.0 section 4.8.2); rules written on the `$share/...` text itself
//!   grant no subscription.
//!
//! Filters are matched as [`crate::topic::matches`] does: level by level, byte for byte, and
//! a rule starting with a wildcard never matches a topic starting with `$` ([MQTT-4.7.2-1]),
//! so `topic read #` does not grant `$SYS/...`.
//!
//! `%c`/`%u` are compared with a whole topic level and never act as wildcards or level
//! separators. A client identifier or user name containing `+`, `#` or `/`, or starting with
//! `$` where it would form the first level, is not substituted: a granting pattern that
//! needs it does not apply, and a `deny` pattern that needs it denies that client everything
//! (fail closed, so an odd name cannot dodge a deny). An empty identifier or user name is
//! an empty level.
//!
//! # Differences from Mosquitto 2.0
//!
//! * Mosquitto's default ACL check allows every SUBSCRIBE (its source marks subscription
//!   checks "FIXME") and filters deliveries by read access only; here subscriptions are
//!   checked as described above.
//! * Mosquitto checks the user's (or anonymous) rules before the patterns, `deny` first within
//!   each list, so a user-section grant wins over a `deny` pattern; here any `deny` wins.
//! * Mosquitto 2.0 substitutes `%c`/`%u` as text anywhere in the pattern and denies all
//!   pattern-checked access to clients whose identifier or user name contains `+` or `#`;
//!   here substitution is per level (as documented, and as Mosquitto 2.1 does) and only the
//!   patterns that need an unsafe name are affected, as described above.

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

use crate::topic;

/// A line of an ACL file that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct AclError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with the line.
    pub message: String,
}

/// The access word of a `topic` or `pattern` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }
}

/// The access a check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
}

/// One level of a rule's filter, split at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Compared byte for byte with the topic level.
    Literal(Box<str>),
    /// `+`: any one level.
    SingleWildcard,
    /// `#`: the rest, including nothing (always the last level).
    MultiWildcard,
    /// `%c` in a pattern: the client identifier.
    ClientId,
    /// `%u` in a pattern: the user name.
    Username,
}

/// A `topic` or `pattern` line's filter, pre-split into levels.
#[derive(Debug, Clone)]
struct Rule {
    levels: Box<[Level]>,
    /// Uses `%c`; `client_at_root`: as its first level.
    uses_client: bool,
    client_at_root: bool,
    /// Uses `%u`; `user_at_root`: as its first level.
    uses_user: bool,
    user_at_root: bool,
}

impl Rule {
    /// Splits `filter` into levels; `%c`/`%u` are variables only when `pattern` is set.
    fn new(filter: &str, pattern: bool) -> Result<Rule, String> {
        topic::validate_topic_filter(filter)
            .map_err(|e| format!("invalid topic filter {filter:?}: {e}"))?;
        let mut levels = Vec::new();
        for text in filter.split('/') {
            let level = match text {
                "+" => Level::SingleWildcard,
                "#" => Level::MultiWildcard,
                "%c" if pattern => Level::ClientId,
                "%u" if pattern => Level::Username,
                _ if pattern && (text.contains("%c") || text.contains("%u")) => {
                    return Err(format!(
                        "%c and %u must be the whole level, not part of {text:?}"
                    ));
                }
                _ => Level::Literal(text.into()),
            };
            levels.push(level);
        }
        let first = levels.first();
        Ok(Rule {
            uses_client: levels.contains(&Level::ClientId),
            client_at_root: first == Some(&Level::ClientId),
            uses_user: levels.contains(&Level::Username),
            user_at_root: first == Some(&Level::Username),
            levels: levels.into_boxed_slice(),
        })
    }

    fn starts_with_wildcard(&self) -> bool {
        matches!(
            self.levels.first(),
            Some(Level::SingleWildcard | Level::MultiWildcard)
        )
    }

    /// Does this rule's level equal the topic or filter level `part`? Wildcards are handled
    /// by the callers; a variable is only reached with a safe value (see [`Client::usable`]).
    fn level_equals(level: &Level, part: &str, client: &Client<'_>) -> bool {
        match level {
            Level::Literal(literal) => **literal == *part,
            Level::ClientId => client.id == part,
            Level::Username => client.user == Some(part),
            Level::SingleWildcard | Level::MultiWildcard => false,
        }
    }

    /// Does the rule match the topic name `topic`?
    fn matches_name(&self, topic: &str, client: &Client<'_>) -> bool {
        // [MQTT-4.7.2-1] a filter starting with a wildcard does not match a topic starting
        // with '$'.
        if topic.starts_with('$') && self.starts_with_wildcard() {
            return false;
        }
        let mut parts = topic.split('/');
        for level in self.levels.iter() {
            if matches!(level, Level::MultiWildcard) {
                // '#' matches the rest, including no level at all ("a/#" matches "a").
                return true;
            }
            let Some(part) = parts.next() else {
                return false;
            };
            if !matches!(level, Level::SingleWildcard) && !Rule::level_equals(level, part, client) {
                return false;
            }
        }
        parts.next().is_none()
    }

    /// Does the rule cover the subscription filter `filter`, i.e. match every topic name that
    /// `filter` matches?
    fn covers(&self, filter: &str, client: &Client<'_>) -> bool {
        // [MQTT-4.7.2-1] a subscription starting with '$' only matches '$' topics, which a
        // rule starting with a wildcard never matches.
        if filter.starts_with('$') && self.starts_with_wildcard() {
            return false;
        }
        let mut parts = filter.split('/');
        for (index, level) in self.levels.iter().enumerate() {
            if matches!(level, Level::MultiWildcard) {
                return true;
            }
            let Some(part) = parts.next() else {
                // The filter matches topics that end here; only a '#' next could match them.
                return false;
            };
            let covered = match level {
                // '+' covers any one level, but not '#' (which also spans several levels or
                // none)... except as the first level of a rule `+/#`: a topic has at least
                // one level, so `+/#` matches whatever `#` matches.
                Level::SingleWildcard if part == "#" => {
                    index == 0 && self.levels.get(1) == Some(&Level::MultiWildcard)
                }
                Level::SingleWildcard => true,
                // A literal (or substituted value) never covers a wildcard level: a safe
                // value and a literal level never equal "+" or "#".
                _ => Rule::level_equals(level, part, client),
            };
            if !covered {
                return false;
            }
            if part == "#" {
                // Only reached for the `+/#` case: the rule's '#' covers the rest.
                return true;
            }
        }
        parts.next().is_none()
    }

    fn applies(&self, subject: Subject<'_>, client: &Client<'_>) -> bool {
        match subject {
            Subject::Name(topic) => self.matches_name(topic, client),
            Subject::Filter(filter) => self.covers(filter, client),
        }
    }
}

/// What a check is about.
#[derive(Debug, Clone, Copy)]
enum Subject<'a> {
    /// A topic name (PUBLISH, delivery).
    Name(&'a str),
    /// A subscription filter (SUBSCRIBE).
    Filter(&'a str),
}

/// The rules of one section (or of the patterns), by effect.
#[derive(Debug, Clone, Default)]
struct RuleSet {
    deny: Vec<Rule>,
    /// `read` and `readwrite` rules.
    read: Vec<Rule>,
    /// `write` and `readwrite` rules.
    write: Vec<Rule>,
}

impl RuleSet {
    fn add(&mut self, rule: Rule, access: Access) {
        match access {
            Access::Deny => self.deny.push(rule),
            Access::Read => self.read.push(rule),
            Access::Write => self.write.push(rule),
            Access::ReadWrite => {
                self.read.push(rule.clone());
                self.write.push(rule);
            }
        }
    }

    fn grants(&self, need: Need) -> &[Rule] {
        match need {
            Need::Read => &self.read,
            Need::Write => &self.write,
        }
    }

    fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.read.is_empty() && self.write.is_empty()
    }
}

/// Whether a pattern can be used for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usable {
    /// The pattern applies, with the client's values substituted.
    Yes,
    /// The pattern uses `%u` and the client has no user name: it does not apply.
    NotApplicable,
    /// A value the pattern needs is unsafe to substitute.
    Refused,
}

/// The client a check is for, with what the patterns need to know about its names.
#[derive(Debug)]
struct Client<'a> {
    id: &'a str,
    user: Option<&'a str>,
    /// Contains '+', '#' or '/': substituting it would add wildcards or levels.
    id_unsafe: bool,
    /// Starts with '$': as a first level it would reach the server's `$` topics.
    id_dollar: bool,
    user_unsafe: bool,
    user_dollar: bool,
}

impl<'a> Client<'a> {
    /// `inspect`: whether patterns will be evaluated (the names are scanned only then).
    fn new(id: &'a str, user: Option<&'a str>, inspect: bool) -> Client<'a> {
        let unsafe_name = |s: &str| s.bytes().any(|b| matches!(b, b'+' | b'#' | b'/'));
        let user_str = user.unwrap_or("");
        Client {
            id,
            user,
            id_unsafe: inspect && unsafe_name(id),
            id_dollar: inspect && id.starts_with('$'),
            user_unsafe: inspect && unsafe_name(user_str),
            user_dollar: inspect && user_str.starts_with('$'),
        }
    }

    fn usable(&self, rule: &Rule) -> Usable {
        if rule.uses_user && self.user.is_none() {
            return Usable::NotApplicable;
        }
        let bad_id =
            rule.uses_client && (self.id_unsafe || (rule.client_at_root && self.id_dollar));
        let bad_user =
            rule.uses_user && (self.user_unsafe || (rule.user_at_root && self.user_dollar));
        if bad_id || bad_user {
            Usable::Refused
        } else {
            Usable::Yes
        }
    }
}

/// A parsed ACL file: which client may publish, subscribe to and receive which topics.
///
/// Build it with [`Acl::parse`] or [`Acl::load`]; see the [module documentation](self) for
/// the format and the rules. The checks do not allocate.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// `topic` lines before the first `user` line.
    anonymous: RuleSet,
    /// `topic` lines after `user <name>` lines, by name.
    users: HashMap<Box<str>, RuleSet>,
    /// `pattern` lines.
    patterns: RuleSet,
    /// `topic` and `pattern` lines.
    rule_count: usize,
}

impl Acl {
    /// Parses the text of an ACL file.
    ///
    /// # Errors
    ///
    /// The first line that is not a comment, a blank line, or a valid `topic`, `user` or
    /// `pattern` statement.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        // The current `user` section; `None` before the first `user` line (anonymous).
        let mut user: Option<Box<str>> = None;
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let error = |message: String| AclError { line, message };
            let statement = raw.trim_matches(|c: char| c.is_ascii_whitespace());
            if statement.is_empty() || statement.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(statement);
            match keyword {
                "topic" | "pattern" => {
                    let pattern = keyword == "pattern";
                    let (first, after) = split_word(rest);
                    if first.is_empty() {
                        return Err(error(format!("missing topic after {keyword:?}")));
                    }
                    let after = after.trim_matches(is_blank);
                    let (access, filter) = if after.is_empty() {
                        // A single word is the filter, whatever it says (as in Mosquitto).
                        (Access::ReadWrite, first)
                    } else {
                        let access = Access::parse(first).ok_or_else(|| {
                            error(format!(
                                "invalid access {first:?} (expected read, write, readwrite or \
                                 deny)"
                            ))
                        })?;
                        (access, after)
                    };
                    let rule = Rule::new(filter, pattern).map_err(error)?;
                    let set = if pattern {
                        &mut acl.patterns
                    } else {
                        match &user {
                            None => &mut acl.anonymous,
                            Some(name) => acl.users.entry(name.clone()).or_default(),
                        }
                    };
                    set.add(rule, access);
                    acl.rule_count += 1;
                }
                "user" => {
                    let name = rest.trim_matches(is_blank);
                    if name.is_empty() {
                        return Err(error("missing user name after \"user\"".to_owned()));
                    }
                    user = Some(name.into());
                }
                _ => {
                    return Err(error(format!(
                        "unknown keyword {keyword:?} (expected topic, user or pattern)"
                    )));
                }
            }
        }
        Ok(acl)
    }

    /// Reads and parses the ACL file at `path`.
    ///
    /// # Errors
    ///
    /// A message naming the path and, for a parse error, the line.
    pub fn load(path: &Path) -> Result<Acl, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("ACL file {}: {e}", path.display()))?;
        Acl::parse(&text).map_err(|e| format!("ACL file {}: {e}", path.display()))
    }

    /// The number of `topic` and `pattern` rules.
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// May this client publish to the topic name `topic`? (Write access.)
    pub fn check_publish(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.check(client_id, username, Subject::Name(topic), Need::Write)
    }

    /// May this client subscribe to `filter`? (Read access on every topic the filter can
    /// match; `$share/{group}/{filter}` is checked by its `{filter}`.)
    ///
    /// This is a gate at SUBSCRIBE time only: deliveries must still be checked with
    /// [`Acl::check_receive`], which is what keeps `deny` areas out of broad subscriptions.
    pub fn check_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool {
        // MQTT 5.0 section 4.8.2: the share name only groups subscribers; the filter after it
        // is what selects messages.
        let filter = topic::parse_shared(filter).map_or(filter, |(_, inner)| inner);
        self.check(client_id, username, Subject::Filter(filter), Need::Read)
    }

    /// May this client receive a message published to `topic`? (Read access; checked for
    /// every delivery, including retained messages and wills.)
    pub fn check_receive(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.check(client_id, username, Subject::Name(topic), Need::Read)
    }

    fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        subject: Subject<'_>,
        need: Need,
    ) -> bool {
        let section = match username {
            None => Some(&self.anonymous),
            Some(name) => self.users.get(name),
        };
        let client = Client::new(client_id, username, !self.patterns.is_empty());

        // Deny wins over every grant.
        let applies = |rule: &Rule| rule.applies(subject, &client);
        if section.is_some_and(|section| section.deny.iter().any(applies)) {
            return false;
        }
        for rule in &self.patterns.deny {
            match client.usable(rule) {
                Usable::NotApplicable => {}
                // Fail closed: an unsafe name must not dodge a deny.
                Usable::Refused => return false,
                Usable::Yes => {
                    if rule.applies(subject, &client) {
                        return false;
                    }
                }
            }
        }

        if section.is_some_and(|section| section.grants(need).iter().any(applies)) {
            return true;
        }
        self.patterns
            .grants(need)
            .iter()
            .any(|rule| client.usable(rule) == Usable::Yes && rule.applies(subject, &client))
    }
}

/// Spaces and tabs separate the words of a line.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits off the first word of `s` (after any leading blanks); returns it and the rest, which
/// starts at the blank after the word (or is empty).
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(is_blank);
    match s.find(is_blank) {
        Some(end) => s.split_at(end),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        match Acl::parse(text) {
            Ok(acl) => acl,
            Err(e) => panic!("{e}"),
        }
    }

    fn err(text: &str) -> AclError {
        match Acl::parse(text) {
            Ok(_) => panic!("parsed: {text:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_acl_denies_everything() {
        for text in ["", "\n\n", "# only a comment\n", "   \n\t\n"] {
            let a = acl(text);
            assert_eq!(a.rule_count(), 0);
            assert!(!a.check_publish("c", None, "a"));
            assert!(!a.check_receive("c", Some("u"), "a"));
            assert!(!a.check_subscribe("c", None, "#"));
        }
    }

    /// What a matrix row checks.
    #[derive(Clone, Copy, Debug)]
    enum Op {
        Pub,
        Sub,
        Recv,
    }

    fn run_matrix(a: &Acl, rows: &[(&str, Option<&str>, Op, &str, bool)]) {
        for &(client, user, op, topic, expected) in rows {
            let got = match op {
                Op::Pub => a.check_publish(client, user, topic),
                Op::Sub => a.check_subscribe(client, user, topic),
                Op::Recv => a.check_receive(client, user, topic),
            };
            assert_eq!(
                got, expected,
                "client {client:?} user {user:?} {op:?} {topic:?}"
            );
        }
    }

    const MATRIX_ACL: &str = "\
# anonymous clients
topic read public/#
topic write inbox/anon
topic deny public/secret

user alice
topic readwrite alice/#
topic read shared/+/status
topic write  shared/alice/status
topic deny alice/private/#

user bob
topic bob/#
topic read $SYS/broker/#
topic deny bob/locked

user alice
topic read extra/alice

pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern write users/%u/outbox/%c
pattern deny devices/%c/firmware
";

    #[test]
    fn matrix_users_rules_topics() {
        use Op::*;
        let a = acl(MATRIX_ACL);
        assert_eq!(a.rule_count(), 15);
        run_matrix(
            &a,
            &[
                // Anonymous: read public/#, write inbox/anon, deny public/secret.
                ("c1", None, Recv, "public/news", true),
                ("c1", None, Recv, "public", true),
                ("c1", None, Pub, "public/news", false),
                ("c1", None, Pub, "inbox/anon", true),
                ("c1", None, Recv, "inbox/anon", false),
                ("c1", None, Recv, "public/secret", false),
                ("c1", None, Recv, "public/secret/x", true),
                ("c1", None, Recv, "alice/x", false),
                ("c1", None, Sub, "public/#", true),
                ("c1", None, Sub, "public/+/x", true),
                ("c1", None, Sub, "public/secret", false),
                ("c1", None, Sub, "#", false),
                // Anonymous rules do not apply to named users, nor user rules to anonymous.
                ("c1", Some("alice"), Recv, "public/news", false),
                ("c1", Some("carol"), Recv, "public/news", false),
                ("c1", None, Recv, "alice/x", false),
                // alice: readwrite alice/#, deny alice/private/#.
                ("c1", Some("alice"), Pub, "alice/x", true),
                ("c1", Some("alice"), Recv, "alice/x/y", true),
                ("c1", Some("alice"), Pub, "alice", true),
                ("c1", Some("alice"), Pub, "alice/private", false),
                ("c1", Some("alice"), Recv, "alice/private/key", false),
                ("c1", Some("alice"), Sub, "alice/#", true),
                ("c1", Some("alice"), Sub, "alice/private/+", false),
                ("c1", Some("alice"), Sub, "alice/+", true),
                // read shared/+/status, write only her own status.
                ("c1", Some("alice"), Recv, "shared/bob/status", true),
                ("c1", Some("alice"), Pub, "shared/bob/status", false),
                ("c1", Some("alice"), Pub, "shared/alice/status", true),
                ("c1", Some("alice"), Recv, "shared/alice/status", true),
                ("c1", Some("alice"), Sub, "shared/+/status", true),
                ("c1", Some("alice"), Sub, "shared/#", false),
                // The second `user alice` section adds up.
                ("c1", Some("alice"), Recv, "extra/alice", true),
                ("c1", Some("alice"), Pub, "extra/alice", false),
                // bob: default access is readwrite; $SYS read.
                ("c2", Some("bob"), Pub, "bob/x", true),
                ("c2", Some("bob"), Recv, "bob/x", true),
                ("c2", Some("bob"), Pub, "bob/locked", false),
                ("c2", Some("bob"), Recv, "$SYS/broker/uptime", true),
                ("c2", Some("bob"), Pub, "$SYS/broker/uptime", false),
                ("c2", Some("bob"), Sub, "$SYS/broker/#", true),
                ("c2", Some("bob"), Sub, "$SYS/#", false),
                ("c2", Some("bob"), Recv, "alice/x", false),
                // User names are case sensitive.
                ("c2", Some("Bob"), Pub, "bob/x", false),
                // Patterns: %c.
                ("dev7", None, Pub, "devices/dev7/temp", true),
                ("dev7", Some("bob"), Recv, "devices/dev7", true),
                ("dev7", None, Pub, "devices/dev8/temp", false),
                ("dev7", None, Pub, "devices/dev7/firmware", false),
                ("dev7", None, Sub, "devices/dev7/#", true),
                ("dev7", None, Sub, "devices/+/#", false),
                ("dev7", None, Sub, "devices/dev7/firmware", false),
                // Patterns: %u needs a user name.
                ("c3", Some("carol"), Recv, "users/carol/inbox", true),
                ("c3", Some("carol"), Pub, "users/carol/inbox", false),
                ("c3", Some("carol"), Recv, "users/dave/inbox", false),
                ("c3", None, Recv, "users/%u/inbox", false),
                ("c3", None, Recv, "users//inbox", false),
                // %u and %c in one pattern.
                ("c3", Some("carol"), Pub, "users/carol/outbox/c3", true),
                ("c3", Some("carol"), Pub, "users/carol/outbox/c4", false),
                ("c3", None, Pub, "users/carol/outbox/c3", false),
            ],
        );
    }

    #[test]
    fn access_words_and_default() {
        use Op::*;
        let a = acl(
            "topic read r\ntopic write w\ntopic readwrite rw\ntopic d\ntopic deny rw/x\n\
             topic readwrite rw/#\n",
        );
        run_matrix(
            &a,
            &[
                ("c", None, Recv, "r", true),
                ("c", None, Pub, "r", false),
                ("c", None, Recv, "w", false),
                ("c", None, Pub, "w", true),
                ("c", None, Recv, "rw", true),
                ("c", None, Pub, "rw", true),
                ("c", None, Recv, "d", true),
                ("c", None, Pub, "d", true),
                // deny overrides the later, broader grant, for both directions.
                ("c", None, Pub, "rw/x", false),
                ("c", None, Recv, "rw/x", false),
                ("c", None, Sub, "rw/x", false),
                ("c", None, Pub, "rw/y", true),
            ],
        );
    }

    #[test]
    fn deny_wins_across_sections_and_patterns() {
        // A user grant does not beat a deny pattern (Mosquitto 2.0 would let it: it checks
        // the user's rules, then the patterns).
        let a = acl("user u\ntopic readwrite #\npattern deny private/%c\n");
        assert!(a.check_publish("c", Some("u"), "private/d"));
        assert!(!a.check_publish("c", Some("u"), "private/c"));
        assert!(!a.check_receive("c", Some("u"), "private/c"));
        // A pattern grant does not beat a user deny.
        let a = acl("user u\ntopic deny home/c/x\npattern readwrite home/%c/#\n");
        assert!(a.check_publish("c", Some("u"), "home/c/y"));
        assert!(!a.check_publish("c", Some("u"), "home/c/x"));
        assert!(a.check_publish("c", Some("v"), "home/c/x"));
        // Order in the file does not matter.
        let a = acl("topic deny a/b\ntopic a/#\n");
        let b = acl("topic a/#\ntopic deny a/b\n");
        for acl in [&a, &b] {
            assert!(!acl.check_publish("c", None, "a/b"));
            assert!(acl.check_publish("c", None, "a/c"));
        }
    }

    #[test]
    fn wildcard_rules() {
        use Op::*;
        let a = acl("topic read a/+/c\ntopic read x/#\ntopic read +\ntopic write #\n");
        run_matrix(
            &a,
            &[
                ("c", None, Recv, "a/b/c", true),
                ("c", None, Recv, "a//c", true),
                ("c", None, Recv, "a/b/c/d", false),
                ("c", None, Recv, "a/c", false),
                ("c", None, Recv, "x", true),
                ("c", None, Recv, "x/", true),
                ("c", None, Recv, "x/y/z", true),
                ("c", None, Recv, "xy/z", false),
                ("c", None, Recv, "single", true),
                ("c", None, Recv, "two/levels", false),
                ("c", None, Recv, "/lead", false),
                ("c", None, Pub, "any/thing/at/all", true),
                ("c", None, Pub, "/", true),
            ],
        );
    }

    #[test]
    fn dollar_topics_are_literal() {
        use Op::*;
        let a = acl("topic readwrite #\ntopic read +/x\ntopic read $SYS/broker/+\n");
        run_matrix(
            &a,
            &[
                // [MQTT-4.7.2-1] '#' and '+' at the start do not match '$' topics.
                ("c", None, Pub, "$SYS/x", false),
                ("c", None, Recv, "$SYS", false),
                ("c", None, Recv, "$x/x", false),
                ("c", None, Pub, "$share/g/x", false),
                ("c", None, Sub, "$SYS/#", false),
                ("c", None, Recv, "$SYS/broker/load", true),
                ("c", None, Pub, "$SYS/broker/load", false),
                ("c", None, Sub, "$SYS/broker/+", true),
                ("c", None, Sub, "$SYS/broker/#", false),
                // '$' below the first level is an ordinary character.
                ("c", None, Pub, "a/$SYS", true),
                ("c", None, Sub, "a/$b/#", true),
                ("c", None, Sub, "#", true),
                ("c", None, Sub, "+/x", true),
            ],
        );
    }

    #[test]
    fn subscribe_coverage() {
        let a = acl("topic read a/#\ntopic read b/+\ntopic read c/+/#\ntopic read d\n");
        let yes = [
            "a/#", "a/b/+", "a", "a/", "a/b/c", "a/+/c/#", "b/x", "b/+", "b/", "c/x", "c/+/#", "d",
        ];
        let no = [
            "#", "+", "b/#", "b", "b/x/y", "c/#", "c", "d/#", "d/+", "+/x", "e", "x/a/#",
        ];
        for f in yes {
            assert!(a.check_subscribe("c", None, f), "{f} should be covered");
        }
        for f in no {
            assert!(
                !a.check_subscribe("c", None, f),
                "{f} should not be covered"
            );
        }
        // `+/#` matches exactly what `#` matches: every topic has at least one level.
        let a = acl("topic read +/#\n");
        assert!(a.check_subscribe("c", None, "#"));
        assert!(a.check_subscribe("c", None, "+/+"));
        assert!(!a.check_subscribe("c", None, "$SYS/#"));
        let a = acl("topic read x/+/#\n");
        assert!(!a.check_subscribe("c", None, "x/#"));
        assert!(a.check_subscribe("c", None, "x/+/#"));
        assert!(a.check_subscribe("c", None, "x/+"));
    }

    #[test]
    fn subscribe_deny_refuses_only_covered_filters() {
        let a = acl("topic read #\ntopic deny secret/#\n");
        assert!(a.check_subscribe("c", None, "#"));
        assert!(a.check_subscribe("c", None, "+/x"));
        assert!(!a.check_subscribe("c", None, "secret/#"));
        assert!(!a.check_subscribe("c", None, "secret/+"));
        assert!(!a.check_subscribe("c", None, "secret"));
        // The deliveries are what keep the secret out of a broad subscription.
        assert!(!a.check_receive("c", None, "secret/x"));
        assert!(a.check_receive("c", None, "public/x"));
    }

    #[test]
    fn shared_subscriptions_check_the_inner_filter() {
        let a = acl("topic read jobs/#\n");
        assert!(a.check_subscribe("c", None, "$share/workers/jobs/#"));
        assert!(a.check_subscribe("c", None, "$share/g/jobs/a/+"));
        assert!(!a.check_subscribe("c", None, "$share/g/other/#"));
        assert!(!a.check_subscribe("c", None, "$share/jobs/x"));
        // A rule on the literal `$share/...` text grants nothing to the inner filter.
        let a = acl("topic read $share/g/#\n");
        assert!(!a.check_subscribe("c", None, "$share/g/x"));
    }

    #[test]
    fn pattern_substitution_is_per_level() {
        let a = acl("pattern readwrite a/%c/b\npattern read %u/#\n");
        assert!(a.check_publish("id", None, "a/id/b"));
        assert!(!a.check_publish("id", None, "a/idx/b"));
        assert!(!a.check_publish("id", None, "a/i/b"));
        assert!(!a.check_publish("id", None, "a/%c/b"));
        assert!(a.check_receive("id", Some("u"), "u/x"));
        assert!(a.check_receive("id", Some("u"), "u"));
        assert!(!a.check_receive("id", Some("u"), "ux"));
        assert!(a.check_subscribe("id", Some("u"), "u/#"));
        assert!(!a.check_subscribe("id", Some("u"), "+/#"));
        // An empty name is an empty level.
        assert!(a.check_publish("", None, "a//b"));
        assert!(a.check_receive("id", Some(""), "/x"));
        // %c and %u in `topic` lines are literal text.
        let a = acl("topic readwrite a/%c\n");
        assert!(a.check_publish("id", None, "a/%c"));
        assert!(!a.check_publish("id", None, "a/id"));
    }

    #[test]
    fn unsafe_names_are_not_substituted() {
        let a = acl("pattern readwrite home/%c/#\npattern read in/%u\n");
        // A client id '+' or '#' would otherwise widen home/%c/# to other homes.
        for id in ["+", "#", "a/b", "a+", "x#"] {
            assert!(!a.check_publish(id, None, "home/bob/x"), "{id}");
            assert!(!a.check_subscribe(id, None, "home/+/#"), "{id}");
            assert!(!a.check_subscribe(id, None, "home/#"), "{id}");
            assert!(!a.check_receive(id, None, &format!("home/{id}")), "{id}");
        }
        // '/' would let "bob/x" reach into bob's home.
        assert!(!a.check_publish("bob/x", None, "home/bob/x/y"));
        for user in ["+", "#", "u/v"] {
            assert!(!a.check_receive("c", Some(user), "in/x"), "{user}");
            assert!(
                !a.check_receive("c", Some(user), &format!("in/{user}")),
                "{user}"
            );
        }
        // '$' is harmless below the first level...
        assert!(a.check_publish("$id", None, "home/$id/x"));
        // ...but at the first level it would reach the server's '$' topics.
        let a = acl("pattern readwrite %c/#\n");
        assert!(a.check_publish("dev", None, "dev/x"));
        assert!(!a.check_publish("$SYS", None, "$SYS/broker/x"));
        assert!(!a.check_subscribe("$SYS", None, "$SYS/#"));
    }

    #[test]
    fn deny_patterns_fail_closed_on_unsafe_names() {
        let a = acl("topic readwrite #\nuser u\ntopic readwrite #\npattern deny secret/%c\n");
        assert!(a.check_publish("ok", None, "x"));
        assert!(!a.check_publish("ok", None, "secret/ok"));
        // An unsafe id cannot be substituted, so the deny applies to everything.
        assert!(!a.check_publish("a/b", None, "x"));
        assert!(!a.check_receive("+", Some("u"), "x"));
        // A deny pattern with %u does not apply to anonymous clients at all.
        let a = acl("topic readwrite #\npattern deny secret/%u\n");
        assert!(a.check_publish("c", None, "secret/c"));
        assert!(a.check_publish("c/d", None, "x"));
    }

    #[test]
    fn mosquitto_documentation_example() {
        // The example ACL file shipped with Mosquitto (aclfile.example), written out by hand.
        let text = "# This affects access control for clients with no username.\n\
                    topic read $SYS/#\n\
                    \n\
                    # This only affects clients with username \"roger\".\n\
                    user roger\n\
                    topic foo/bar\n\
                    \n\
                    # This affects all clients.\n\
                    pattern write $SYS/broker/connection/%c/state\n";
        let a = acl(text);
        assert_eq!(a.rule_count(), 3);
        // Anonymous clients read $SYS, and nothing else.
        assert!(a.check_receive("any", None, "$SYS/broker/uptime"));
        assert!(a.check_subscribe("any", None, "$SYS/#"));
        assert!(!a.check_publish("any", None, "$SYS/broker/uptime"));
        assert!(!a.check_receive("any", None, "foo/bar"));
        // roger: foo/bar readwrite, no $SYS.
        assert!(a.check_publish("r1", Some("roger"), "foo/bar"));
        assert!(a.check_receive("r1", Some("roger"), "foo/bar"));
        assert!(!a.check_receive("r1", Some("roger"), "$SYS/broker/uptime"));
        assert!(!a.check_publish("r1", Some("roger"), "foo/baz"));
        // Everyone (bridges) may write their own connection state.
        for user in [None, Some("roger"), Some("other")] {
            assert!(a.check_publish("br1", user, "$SYS/broker/connection/br1/state"));
            assert!(!a.check_publish("br1", user, "$SYS/broker/connection/br2/state"));
            // Only anonymous clients read $SYS.
            let state = "$SYS/broker/connection/br2/state";
            assert_eq!(a.check_receive("br1", user, state), user.is_none());
        }
        // The documentation's own pattern example.
        let a = acl("pattern write sensor/%u/data\n");
        assert!(a.check_publish("c", Some("s1"), "sensor/s1/data"));
        assert!(!a.check_publish("c", Some("s1"), "sensor/s2/data"));
        assert!(!a.check_publish("c", None, "sensor//data"));
    }

    #[test]
    fn line_syntax() {
        // Spaces inside a filter need the access word; the rest of the line is the filter.
        let a = acl("topic readwrite  my topic/with spaces  \n");
        assert!(a.check_publish("c", None, "my topic/with spaces"));
        // A lone word after `topic` is the filter, even an access word (as in Mosquitto).
        let a = acl("topic read\n");
        assert!(a.check_publish("c", None, "read"));
        assert!(a.check_receive("c", None, "read"));
        // CRLF, tabs, indentation, indented comments, trailing blanks.
        let a = acl("\tuser  John Smith \r\n  # comment\r\ntopic\tread\tx/#\r\n");
        assert!(a.check_receive("c", Some("John Smith"), "x/y"));
        assert!(!a.check_receive("c", Some("John"), "x/y"));
        // `#` is a comment only at the start of a line, not a topic line's filter.
        let a = acl("topic #\n#topic x\n");
        assert_eq!(a.rule_count(), 1);
        assert!(a.check_publish("c", None, "anything"));
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("topic read a\nbogus x\n", 2, "unknown keyword"),
            ("\n\n\nTopic a\n", 4, "unknown keyword"),
            ("topic\n", 1, "missing topic"),
            ("# c\npattern   \n", 2, "missing topic"),
            ("user\n", 1, "missing user name"),
            ("user   \t\n", 1, "missing user name"),
            ("topic reed a/b\n", 1, "invalid access"),
            ("topic a b\n", 1, "invalid access"),
            ("topic read a/#/b\n", 1, "invalid topic filter"),
            ("topic read a/b#\n", 1, "invalid topic filter"),
            ("topic write a+\n", 1, "invalid topic filter"),
            ("user u\ntopic deny x\0y\n", 2, "invalid topic filter"),
            ("pattern read dev-%c/x\n", 1, "whole level"),
            ("pattern read %u%c\n", 1, "whole level"),
        ];
        for &(text, line, what) in cases {
            let e = err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
        }
        // `dev-%c` is fine in a `topic` line, where %c is literal.
        assert_eq!(acl("topic read dev-%c/x\n").rule_count(), 1);
    }

    #[test]
    fn load_names_the_path() {
        let dir = std::env::temp_dir().join(format!("acl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let good = dir.join("good.acl");
        let bad = dir.join("bad.acl");
        std::fs::write(&good, "topic read a\nuser u\ntopic b\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&bad, "topic read a\n\nfrobnicate\n").unwrap_or_else(|e| panic!("{e}"));
        let loaded = Acl::load(&good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.rule_count(), 2);
        let e = Acl::load(&bad).err().unwrap_or_default();
        assert!(e.contains("bad.acl") && e.contains("line 3:"), "{e}");
        let e = Acl::load(&dir.join("missing.acl"))
            .err()
            .unwrap_or_default();
        assert!(e.contains("missing.acl"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// A rule as written in the file, for the brute-force evaluation.
        #[derive(Debug, Clone)]
        struct RawRule {
            /// `None`: anonymous section; ignored for patterns.
            section: Option<&'static str>,
            pattern: bool,
            access: Access,
            filter: String,
        }

        fn access_word(access: Access) -> &'static str {
            match access {
                Access::Read => "read",
                Access::Write => "write",
                Access::ReadWrite => "readwrite",
                Access::Deny => "deny",
            }
        }

        /// The ACL file for `rules`: anonymous topics first, then one section per rule, with
        /// the patterns interleaved wherever they fall.
        fn render(rules: &[RawRule]) -> String {
            let mut text = String::new();
            // Anonymous `topic` lines must come before the first `user` line; patterns may
            // stand anywhere and still apply to everyone.
            let mut ordered: Vec<&RawRule> = rules
                .iter()
                .filter(|r| !r.pattern && r.section.is_none())
                .collect();
            ordered.extend(rules.iter().filter(|r| r.pattern || r.section.is_some()));
            for rule in ordered {
                if !rule.pattern
                    && let Some(user) = rule.section
                {
                    text.push_str(&format!("user {user}\n"));
                }
                let keyword = if rule.pattern { "pattern" } else { "topic" };
                text.push_str(&format!(
                    "{keyword} {} {}\n",
                    access_word(rule.access),
                    rule.filter
                ));
            }
            text
        }

        fn unsafe_value(value: &str, first_level: bool) -> bool {
            value.contains(['+', '#', '/']) || (first_level && value.starts_with('$'))
        }

        /// The rule's filter for this client: `Ok(None)` when it does not apply, `Err(())`
        /// when a pattern's value is refused.
        fn effective_filter(
            rule: &RawRule,
            client: &str,
            user: Option<&str>,
        ) -> Result<Option<String>, ()> {
            if !rule.pattern {
                return Ok((rule.section == user).then(|| rule.filter.clone()));
            }
            let mut levels = Vec::new();
            let mut refused = false;
            for (i, level) in rule.filter.split('/').enumerate() {
                let value = match level {
                    "%c" => client,
                    "%u" => match user {
                        Some(u) => u,
                        None => return Ok(None),
                    },
                    other => other,
                };
                if (level == "%c" || level == "%u") && unsafe_value(value, i == 0) {
                    refused = true;
                }
                levels.push(value);
            }
            if refused {
                Err(())
            } else {
                Ok(Some(levels.join("/")))
            }
        }

        /// The semantics, spelled out: any applicable deny (or refused deny pattern) denies;
        /// otherwise any applicable grant with the access grants.
        fn brute(
            rules: &[RawRule],
            client: &str,
            user: Option<&str>,
            read: bool,
            applies: impl Fn(&str) -> bool,
        ) -> bool {
            let mut granted = false;
            for rule in rules {
                let deny = rule.access == Access::Deny;
                let filter = match effective_filter(rule, client, user) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(()) if deny => return false,
                    Err(()) => continue,
                };
                if applies(&filter) {
                    if deny {
                        return false;
                    }
                    let has = match rule.access {
                        Access::ReadWrite => true,
                        Access::Read => read,
                        Access::Write => !read,
                        Access::Deny => false,
                    };
                    granted |= has;
                }
            }
            granted
        }

        /// Topic levels: every literal a filter may hold and every safe name a pattern may
        /// substitute.
        const WORDS: &[&str] = &["a", "b", "", "$s", "c1", "u1", "u2"];

        /// Every topic name of up to `depth` levels over WORDS and a word no filter uses.
        fn universe(depth: usize) -> &'static [String] {
            static UNIVERSE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
            UNIVERSE.get_or_init(|| build_universe(depth))
        }

        fn build_universe(depth: usize) -> Vec<String> {
            let mut words: Vec<&str> = WORDS.to_vec();
            words.push("zz");
            let mut all = Vec::new();
            let mut layer: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
            for _ in 0..depth {
                all.extend(layer.iter().cloned());
                layer = layer
                    .iter()
                    .flat_map(|t| words.iter().map(move |w| format!("{t}/{w}")))
                    .collect();
            }
            all
        }

        /// Does `acl_filter` match every topic (of the universe) that `sub` matches?
        fn brute_covers(acl_filter: &str, sub: &str, universe: &[String]) -> bool {
            universe
                .iter()
                .all(|t| !topic::matches(sub, t) || topic::matches(acl_filter, t))
        }

        /// Filters of 1 to 3 levels, the last possibly `#`; wildcards are frequent.
        fn filter_strategy(vars: bool) -> impl Strategy<Value = String> {
            let mut levels: Vec<&'static str> = vec!["a", "b", "", "$s", "+", "+", "c1", "u1"];
            if vars {
                levels.extend(["%c", "%u", "%c", "%u"]);
            }
            (
                prop::collection::vec(prop::sample::select(levels), 0..=2),
                any::<bool>(),
            )
                .prop_map(|(mut levels, hash)| {
                    // A filter needs a level, and a lone empty level is not a valid filter.
                    if hash || levels.is_empty() || levels == [""] {
                        levels.push("#");
                    }
                    levels.join("/")
                })
        }

        fn rule_strategy() -> impl Strategy<Value = RawRule> {
            (
                prop::sample::select(vec![None, Some("u1"), Some("u2")]),
                any::<bool>(),
                prop::sample::select(vec![
                    Access::Read,
                    Access::Write,
                    Access::ReadWrite,
                    Access::Deny,
                ]),
            )
                .prop_flat_map(|(section, pattern, access)| {
                    filter_strategy(pattern).prop_map(move |filter| RawRule {
                        section,
                        pattern,
                        access,
                        filter,
                    })
                })
        }

        fn client_strategy() -> impl Strategy<Value = (&'static str, Option<&'static str>)> {
            (
                prop::sample::select(vec!["c1", "a", "", "x/y", "+", "#", "$s", "a+"]),
                prop::sample::select(vec![
                    None,
                    Some("u1"),
                    Some("u2"),
                    Some("a"),
                    Some(""),
                    Some("v/w"),
                    Some("#"),
                    Some("$s"),
                ]),
            )
        }

        fn topic_strategy() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(WORDS.to_vec()), 1..=4)
                .prop_map(|levels| levels.join("/"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn publish_and_receive_agree_with_brute_force(
                rules in prop::collection::vec(rule_strategy(), 0..6),
                (client, user) in client_strategy(),
                topics in prop::collection::vec(topic_strategy(), 1..8),
            ) {
                let text = render(&rules);
                let acl = Acl::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
                prop_assert_eq!(acl.rule_count(), rules.len());
                for t in &topics {
                    let matches = |f: &str| topic::matches(f, t);
                    prop_assert_eq!(
                        acl.check_publish(client, user, t),
                        brute(&rules, client, user, false, matches),
                        "publish {:?} {:?} {:?}\n{}", client, user, t, text
                    );
                    prop_assert_eq!(
                        acl.check_receive(client, user, t),
                        brute(&rules, client, user, true, matches),
                        "receive {:?} {:?} {:?}\n{}", client, user, t, text
                    );
                }
            }

            #[test]
            fn arbitrary_text_never_panics(text in any::<String>()) {
                let _ = Acl::parse(&text);
            }

            #[test]
            fn keyword_soup_never_panics(
                lines in prop::collection::vec(
                    prop::collection::vec(
                        prop::sample::select(vec![
                            "topic", "pattern", "user", "read", "write", "readwrite", "deny",
                            "#", "+", "a/#", "%c", "%u", "a/%c", "/", " ", "\t", "\r", "$SYS/#",
                            "+/+", "x#", "é", "\0",
                        ]),
                        0..6,
                    ),
                    0..8,
                ),
                (client, user) in client_strategy(),
                t in topic_strategy(),
            ) {
                let text: String = lines
                    .iter()
                    .map(|words| words.join(" ") + "\n")
                    .collect();
                if let Ok(acl) = Acl::parse(&text) {
                    let _ = acl.check_publish(client, user, &t);
                    let _ = acl.check_receive(client, user, &t);
                    let _ = acl.check_subscribe(client, user, &t);
                    let _ = acl.check_subscribe(client, user, "#");
                    let _ = acl.check_subscribe(client, user, "$share/g/a/#");
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn subscribe_agrees_with_brute_force(
                rules in prop::collection::vec(rule_strategy(), 0..4),
                (client, user) in client_strategy(),
                filters in prop::collection::vec(filter_strategy(false), 1..4),
            ) {
                let text = render(&rules);
                let acl = Acl::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
                // Filters (and rules) have at most 3 levels; a counterexample to coverage, if
                // there is one, has at most one level more.
                let universe = universe(4);
                for f in &filters {
                    let covers = |rule: &str| brute_covers(rule, f, universe);
                    prop_assert_eq!(
                        acl.check_subscribe(client, user, f),
                        brute(&rules, client, user, true, covers),
                        "subscribe {:?} {:?} {:?}\n{}", client, user, f, text
                    );
                }
            }
        }
    }
}
