//! Editing a password file in Mosquitto's format (`user:$7$...` lines), as `mosquitto_passwd`
//! does: the `mqtt-server passwd` subcommand. Reading it is [`super::credentials`]'s job.

use std::io::Write;
use std::path::Path;

use super::credentials::{hash_password, parse_line};

/// What to do with one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Add the user, or replace its password.
    Set(&'a str),
    /// Remove the user.
    Delete,
}

/// Applies `change` to `user` in the password file at `path`. With `create`, the file is
/// started afresh (as `mosquitto_passwd -c`); otherwise it must exist and parse. The file is
/// rewritten atomically (a temporary file renamed over it), other lines kept as they were, and
/// a new file is readable by its owner only. Errors name the path.
pub fn update(path: &Path, create: bool, user: &str, change: Change<'_>) -> Result<(), String> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        return Err(format!(
            "invalid user name {user:?}: it must be non-empty, without ':' or control characters"
        ));
    }
    if let Change::Set(password) = change
        && password.is_empty()
    {
        return Err("the password must not be empty".to_owned());
    }
    let existing = if create {
        String::new()
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the password file: {e}", path.display()))?
    };
    let mut lines: Vec<String> = Vec::new();
    let mut found = false;
    for (index, line) in existing.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            lines.push(line.to_owned());
            continue;
        }
        let (name, _) = parse_line(trimmed)
            .map_err(|e| format!("{}: line {}: {e}", path.display(), index + 1))?;
        if name != user {
            lines.push(line.to_owned());
            continue;
        }
        found = true;
        if let Change::Set(password) = change {
            lines.push(format!("{user}:{}", hash_password(password)));
        }
    }
    match change {
        Change::Set(password) if !found => {
            lines.push(format!("{user}:{}", hash_password(password)));
        }
        Change::Delete if !found => {
            return Err(format!("{}: user '{user}' not found", path.display()));
        }
        _ => {}
    }
    write_atomically(path, &lines)
}

/// Writes `lines` to a temporary file beside `path` and renames it over `path`.
fn write_atomically(path: &Path, lines: &[String]) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let err =
        |e: std::io::Error| format!("{}: cannot write the password file: {e}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Hashes are salted and slow, but still nobody else's business.
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(err)?;
    let mut text = lines.join("\n");
    text.push('\n');
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::Credentials;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mqtt-passwd-{}-{name}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir.join("passwd")
    }

    #[test]
    fn create_add_replace_delete_round_trip_through_the_reader() {
        let path = temp("round-trip");
        update(&path, true, "alice", Change::Set("a-pass")).expect("create");
        update(&path, false, "bob", Change::Set("b-pass")).expect("add");
        update(&path, false, "alice", Change::Set("new-pass")).expect("replace");
        let creds = Credentials::new();
        assert_eq!(creds.load_password_file(&path), Ok(2));
        assert_eq!(creds.verify("alice", b"new-pass"), Some(true));
        assert_eq!(creds.verify("alice", b"a-pass"), Some(false));
        assert_eq!(creds.verify("bob", b"b-pass"), Some(true));
        update(&path, false, "bob", Change::Delete).expect("delete");
        assert_eq!(creds.load_password_file(&path), Ok(1));
        assert_eq!(creds.verify("bob", b"b-pass"), None);
        let err = update(&path, false, "bob", Change::Delete).expect_err("gone");
        assert!(err.contains("not found"), "{err}");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let path = temp("bad");
        assert!(update(&path, true, "a:b", Change::Set("x")).is_err());
        assert!(update(&path, true, "", Change::Set("x")).is_err());
        assert!(update(&path, true, "a", Change::Set("")).is_err());
        let missing = update(&path.with_file_name("nope"), false, "a", Change::Set("x"))
            .expect_err("missing file without -c");
        assert!(missing.contains("nope"), "{missing}");
        std::fs::write(&path, "alice:$7$broken\n").expect("write");
        let broken = update(&path, false, "bob", Change::Set("x")).expect_err("broken line");
        assert!(broken.contains("line 1"), "{broken}");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
