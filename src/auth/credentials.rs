//! A user name → password hash store that reads Mosquitto password files.
//!
//! Each line of a Mosquitto password file is `user:hash`, where the hash is one of
//!
//! * `$7$<iterations>$<base64 salt>$<base64 hash>`: PBKDF2-HMAC-SHA512 with a 64-byte output,
//!   what `mosquitto_passwd` writes by default (101 iterations, 12-byte salt);
//! * `$6$<base64 salt>$<base64 hash>`: one round of SHA-512 over `password || salt`, the
//!   format of Mosquitto before 2.0 (`mosquitto_passwd -H sha512`).
//!
//! Salts are base64-decoded before use; base64 is the standard alphabet, padded when written and
//! accepted with or without padding when read. Lines that are blank or start with `#` are
//! ignored, as Mosquitto ignores `#` lines.
//!
//! One difference from Mosquitto: it hashes the password up to its first NUL byte (it is a C
//! string there), while [`Credentials::verify`] hashes every byte the client sent.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use parking_lot::RwLock;
use rand::RngCore as _;
use sha2::{Digest as _, Sha512};

/// PBKDF2 iterations of new hashes: `mosquitto_passwd`'s default (`PW_DEFAULT_ITERATIONS`), so
/// that a hash written here is indistinguishable from one written by `mosquitto_passwd`.
/// Hashes read from a file may use any count of at least 1.
pub const PBKDF2_ITERATIONS: u32 = 101;

/// Salt length of new hashes, in bytes: `mosquitto_passwd`'s `SALT_LEN`.
pub const SALT_LEN: usize = 12;

/// Length of a SHA-512 digest and of the PBKDF2 output Mosquitto stores.
const HASH_LEN: usize = 64;

/// Standard alphabet; decoding accepts a missing `=` padding as well.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How a [`PasswordHash`] was derived from the password.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scheme {
    /// `$6$`: SHA-512(password || salt), one round.
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 with this many iterations.
    Pbkdf2Sha512 { iterations: u32 },
}

/// A salted password hash in one of Mosquitto's formats. `Display` writes the password file
/// form (`$7$...`); `Debug` shows only the scheme, never the salt or hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    scheme: Scheme,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

impl PasswordHash {
    /// Hashes `password` as `mosquitto_passwd` does: PBKDF2-HMAC-SHA512, [`PBKDF2_ITERATIONS`]
    /// iterations, a fresh random salt of [`SALT_LEN`] bytes.
    pub fn new(password: &[u8]) -> PasswordHash {
        let mut salt = vec![0u8; SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        let scheme = Scheme::Pbkdf2Sha512 {
            iterations: PBKDF2_ITERATIONS,
        };
        let hash = derive(scheme, &salt, password);
        PasswordHash { scheme, salt, hash }
    }

    /// Parses the hash field of a password file line (`$7$...` or `$6$...`).
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let mut fields = text.split('$');
        if fields.next() != Some("") {
            return Err("password hash must start with '$6$' or '$7$'".to_owned());
        }
        let scheme = match fields.next() {
            Some("6") => Scheme::Sha512,
            Some("7") => {
                let field = fields.next().unwrap_or_default();
                let iterations = field.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(
                    || {
                        format!(
                            "PBKDF2 iteration count must be a number from 1 to {}, got {field:?}",
                            u32::MAX
                        )
                    },
                )?;
                Scheme::Pbkdf2Sha512 { iterations }
            }
            Some(other) => {
                return Err(format!(
                    "unsupported password hash type '${other}$' (expected '$6$' or '$7$')"
                ));
            }
            None => return Err("password hash must start with '$6$' or '$7$'".to_owned()),
        };
        let (Some(salt), Some(hash), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(
                "password hash must have the form $7$<iterations>$<salt>$<hash> \
                        or $6$<salt>$<hash>"
                    .to_owned(),
            );
        };
        let salt = LENIENT_BASE64
            .decode(salt)
            .map_err(|err| format!("salt is not valid base64: {err}"))?;
        if salt.is_empty() {
            return Err("salt is empty".to_owned());
        }
        let hash = LENIENT_BASE64
            .decode(hash)
            .map_err(|err| format!("hash is not valid base64: {err}"))?;
        let hash: [u8; HASH_LEN] = hash.as_slice().try_into().map_err(|_| {
            format!(
                "hash must decode to {HASH_LEN} bytes (SHA-512), got {}",
                hash.len()
            )
        })?;
        Ok(PasswordHash { scheme, salt, hash })
    }

    /// Whether `password` hashes to this hash. The final comparison takes the same time
    /// wherever the first differing byte is.
    pub fn verify(&self, password: &[u8]) -> bool {
        let candidate = derive(self.scheme, &self.salt, password);
        constant_time_eq(&candidate, &self.hash)
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Sha512 => f.write_str("$6$")?,
            Scheme::Pbkdf2Sha512 { iterations } => write!(f, "$7${iterations}$")?,
        }
        write!(
            f,
            "{}${}",
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.hash)
        )
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// The hash of `password` under `scheme` with `salt`.
fn derive(scheme: Scheme, salt: &[u8], password: &[u8]) -> [u8; HASH_LEN] {
    match scheme {
        Scheme::Sha512 => {
            let mut digest = Sha512::new();
            digest.update(password);
            digest.update(salt);
            digest.finalize().into()
        }
        Scheme::Pbkdf2Sha512 { iterations } => {
            let mut out = [0u8; HASH_LEN];
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
            out
        }
    }
}

/// Equality of two equal-length arrays without an early exit: every byte pair is XORed into
/// one accumulator, and `black_box` keeps the optimiser from short-circuiting the fold.
fn constant_time_eq(a: &[u8; HASH_LEN], b: &[u8; HASH_LEN]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// Hashes `password` for a password file (`$7$101$<salt>$<hash>`, as `mosquitto_passwd` writes).
pub fn hash_password(password: &str) -> String {
    PasswordHash::new(password.as_bytes()).to_string()
}

/// Parses one `user:hash` line of a password file. The user name is trimmed of surrounding
/// blanks (as Mosquitto does) and must not be empty; the hash is trimmed too.
pub fn parse_line(line: &str) -> Result<(String, PasswordHash), String> {
    let Some((user, hash)) = line.split_once(':') else {
        return Err("expected 'user:password-hash'".to_owned());
    };
    let user = user.trim();
    if user.is_empty() {
        return Err("user name is empty".to_owned());
    }
    let hash = hash.trim();
    if hash.is_empty() {
        return Err(format!("user '{user}' has no password hash"));
    }
    let hash = PasswordHash::parse(hash).map_err(|err| format!("user '{user}': {err}"))?;
    Ok((user.to_owned(), hash))
}

/// User names and their password hashes, shared between connections.
#[derive(Debug, Default)]
pub struct Credentials {
    users: RwLock<HashMap<String, PasswordHash>>,
}

impl Credentials {
    /// An empty store.
    pub fn new() -> Credentials {
        Credentials::default()
    }

    /// Adds or replaces `user`, hashing `password` as `mosquitto_passwd` does.
    pub fn add(&self, user: &str, password: &str) {
        let hash = PasswordHash::new(password.as_bytes());
        self.users.write().insert(user.to_owned(), hash);
    }

    /// Checks a password: `None` if `user` is unknown, else whether `password` matches.
    pub fn verify(&self, user: &str, password: &[u8]) -> Option<bool> {
        // Clone the entry so the (deliberately slow) hashing runs without holding the lock.
        let hash = self.users.read().get(user).cloned()?;
        Some(hash.verify(password))
    }

    /// Replaces every entry with the contents of a Mosquitto password file and returns the
    /// number of users read. The file is read completely first: on any error the store is left
    /// as it was. Errors name the path and, for a bad line, its 1-based number.
    pub fn load_password_file(&self, path: impl AsRef<Path>) -> Result<usize, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("{}: cannot read the password file: {err}", path.display()))?;
        let mut users: HashMap<String, (PasswordHash, usize)> = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (user, hash) = parse_line(trimmed)
                .map_err(|err| format!("{}: line {number}: {err}", path.display()))?;
            if let Some((_, first)) = users.get(&user) {
                return Err(format!(
                    "{}: line {number}: user '{user}' is already defined on line {first}",
                    path.display()
                ));
            }
            users.insert(user, (hash, number));
        }
        let count = users.len();
        *self.users.write() = users
            .into_iter()
            .map(|(user, (hash, _))| (user, hash))
            .collect();
        Ok(count)
    }

    /// Whether the store has no users.
    pub fn is_empty(&self) -> bool {
        self.users.read().is_empty()
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    /// Written by `mosquitto_passwd -c -b pw alice s3cret` (Mosquitto 2.0.11).
    const ALICE_7: &str = "alice:$7$101$zDIEggVrG0PytMOC$eWi1ZZlUlENSITy7Z3bpb9HAyQ+j6zZNCBlXiFR8\
                           Ry370EMKKNjDZe0mp6f94zFuGxSwYssOIfbxrYToguPzqA==";
    /// Written by `mosquitto_passwd -H sha512 -b pw bob hunter2` (Mosquitto 2.0.11).
    const BOB_6: &str = "bob:$6$OxwvAKJUVBCjT/U0$MaQXN8sdbsJZ2200tdqGkEW7dc9AjfG7mjF1DJMnv2hWnsjq\
                         BB1lfxorRm186fdMegST9Iu0YwTn90V2jeyd5w==";

    const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

    /// A unique path in the temporary directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let file = format!("mqtt-server-credentials-{}-{n}-{name}", std::process::id());
            TempFile(std::env::temp_dir().join(file))
        }

        fn with_contents(name: &str, contents: &str) -> TempFile {
            let file = TempFile::new(name);
            std::fs::write(&file.0, contents).unwrap();
            file
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn load_err(contents: &str) -> String {
        let file = TempFile::with_contents("bad", contents);
        let err = Credentials::new().load_password_file(&file.0).unwrap_err();
        let prefix = format!("{}: ", file.0.display());
        assert!(err.starts_with(&prefix), "{err}");
        err[prefix.len()..].to_owned()
    }

    #[test]
    fn credentials_is_send_sync_default() {
        fn check<T: Send + Sync + Default>() {}
        check::<Credentials>();
    }

    #[test]
    fn pbkdf2_sha512_matches_a_published_vector() {
        // PBKDF2-HMAC-SHA512, P = "password", S = "salt", c = 1, dkLen = 64.
        let expected = "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252\
                        c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce";
        let out = derive(Scheme::Pbkdf2Sha512 { iterations: 1 }, b"salt", b"password");
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn verifies_a_mosquitto_pbkdf2_line() {
        let (user, hash) = parse_line(ALICE_7).unwrap();
        assert_eq!(user, "alice");
        assert!(hash.verify(b"s3cret"));
        assert!(!hash.verify(b"s3cret "));
        assert!(!hash.verify(b"S3cret"));
        assert!(!hash.verify(b""));
    }

    #[test]
    fn verifies_a_mosquitto_legacy_sha512_line() {
        let (user, hash) = parse_line(BOB_6).unwrap();
        assert_eq!(user, "bob");
        assert!(hash.verify(b"hunter2"));
        assert!(!hash.verify(b"hunter3"));
    }

    #[test]
    fn display_writes_back_the_parsed_line() {
        for line in [ALICE_7, BOB_6] {
            let (user, hash) = parse_line(line).unwrap();
            assert_eq!(format!("{user}:{hash}"), line);
        }
    }

    #[test]
    fn debug_hides_salt_and_hash() {
        let (_, hash) = parse_line(ALICE_7).unwrap();
        let debug = format!("{hash:?}");
        assert_eq!(
            debug,
            "PasswordHash { scheme: Pbkdf2Sha512 { iterations: 101 }, .. }"
        );
        let store = Credentials::new();
        store.add("carol", "pw");
        assert!(!format!("{store:?}").contains('$'));
    }

    #[test]
    fn hash_password_writes_mosquitto_passwd_format() {
        let line = hash_password("correct horse");
        let fields: Vec<&str> = line.split('$').collect();
        assert_eq!(fields.len(), 5, "{line}");
        assert_eq!(&fields[..3], ["", "7", "101"]);
        // 12 bytes of salt: 16 base64 characters, no padding; 64 bytes of hash: 88 with "==".
        assert_eq!(STANDARD.decode(fields[3]).unwrap().len(), SALT_LEN);
        assert_eq!(fields[4].len(), 88);
        assert!(fields[4].ends_with("=="));
        let hash = PasswordHash::parse(&line).unwrap();
        assert!(hash.verify(b"correct horse"));
        assert!(!hash.verify(b"correct horse battery"));
    }

    #[test]
    fn hash_password_uses_a_fresh_salt() {
        let a = hash_password("same");
        let b = hash_password("same");
        assert_ne!(a, b);
        assert_ne!(a.split('$').nth(3), b.split('$').nth(3));
    }

    #[test]
    fn unpadded_base64_is_accepted() {
        let (_, hash) = parse_line(ALICE_7.trim_end_matches('=')).unwrap();
        assert!(hash.verify(b"s3cret"));
    }

    #[test]
    fn any_iteration_count_is_read() {
        let salt = b"0123456789ab";
        let hash = derive(Scheme::Pbkdf2Sha512 { iterations: 7 }, salt, b"pw");
        let line = format!("u:$7$7${}${}", STANDARD.encode(salt), STANDARD.encode(hash));
        let (_, parsed) = parse_line(&line).unwrap();
        assert!(parsed.verify(b"pw"));
        // The same salt and hash claimed with another count must not verify.
        let wrong = line.replacen("$7$7$", "$7$8$", 1);
        assert!(!parse_line(&wrong).unwrap().1.verify(b"pw"));
    }

    #[test]
    fn malformed_hashes_are_rejected_with_a_reason() {
        let salt = "zDIEggVrG0PytMOC";
        let hash = ALICE_7.rsplit('$').next().unwrap();
        let cases = [
            ("u:plain", "must start with '$6$' or '$7$'"),
            ("u:$5$abc$def", "unsupported password hash type '$5$'"),
            ("u:$7$", "iteration count must be a number"),
            (&format!("u:$7$0${salt}${hash}"), "got \"0\""),
            (&format!("u:$7$-1${salt}${hash}"), "got \"-1\""),
            (&format!("u:$7$ten${salt}${hash}"), "got \"ten\""),
            (&format!("u:$7$101${salt}"), "must have the form"),
            (
                &format!("u:$7$101${salt}${hash}$extra"),
                "must have the form",
            ),
            (&format!("u:$6${salt}"), "must have the form"),
            (&format!("u:$7$101$!!!${hash}"), "salt is not valid base64"),
            (
                &format!("u:$7$101${salt}$not*base64"),
                "hash is not valid base64",
            ),
            (&format!("u:$7$101$${hash}"), "salt is empty"),
            (
                &format!("u:$7$101${salt}${salt}"),
                "hash must decode to 64 bytes",
            ),
            ("u:", "user 'u' has no password hash"),
            (&format!(" :$6${salt}${hash}"), "user name is empty"),
            ("no colon here", "expected 'user:password-hash'"),
        ];
        for (line, reason) in cases {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(reason), "{line:?}: {err}");
        }
    }

    #[test]
    fn user_name_and_hash_are_trimmed() {
        let padded = format!("  {}  \r", ALICE_7.replacen(':', " : ", 1));
        let (user, hash) = parse_line(&padded).unwrap();
        assert_eq!(user, "alice");
        assert!(hash.verify(b"s3cret"));
    }

    #[test]
    fn add_then_verify() {
        let store = Credentials::new();
        assert!(store.is_empty());
        store.add("dave", "pa:ss$word");
        assert!(!store.is_empty());
        assert_eq!(store.len(), 1);
        assert_eq!(store.verify("dave", b"pa:ss$word"), Some(true));
        assert_eq!(store.verify("dave", b"pa:ss$wore"), Some(false));
        assert_eq!(store.verify("Dave", b"pa:ss$word"), None);
        store.add("dave", "new");
        assert_eq!(store.len(), 1);
        assert_eq!(store.verify("dave", b"pa:ss$word"), Some(false));
        assert_eq!(store.verify("dave", b"new"), Some(true));
    }

    #[test]
    fn load_password_file_reads_both_formats_and_skips_comments() {
        let contents = format!("# users\n\n{ALICE_7}\r\n   \n  # indented comment\n{BOB_6}");
        let file = TempFile::with_contents("pw", &contents);
        let store = Credentials::new();
        assert_eq!(store.load_password_file(&file.0), Ok(2));
        assert_eq!(store.verify("alice", b"s3cret"), Some(true));
        assert_eq!(store.verify("bob", b"hunter2"), Some(true));
        assert_eq!(store.verify("bob", b"s3cret"), Some(false));
        assert_eq!(store.verify("# users", b""), None);
    }

    #[test]
    fn load_password_file_replaces_previous_entries() {
        let store = Credentials::new();
        store.add("old", "x");
        let file = TempFile::with_contents("pw", ALICE_7);
        assert_eq!(store.load_password_file(&file.0), Ok(1));
        assert_eq!(store.verify("old", b"x"), None);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn load_password_file_error_leaves_store_unchanged() {
        let store = Credentials::new();
        store.add("keep", "me");
        let file = TempFile::with_contents("pw", &format!("{ALICE_7}\nbroken\n"));
        assert!(store.load_password_file(&file.0).is_err());
        assert_eq!(store.verify("keep", b"me"), Some(true));
        assert_eq!(store.verify("alice", b"s3cret"), None);
    }

    #[test]
    fn load_errors_name_path_and_line() {
        let err = load_err(&format!("# c\n{ALICE_7}\n\nmallory:$7$x$y$z\n"));
        assert!(
            err.starts_with("line 4: user 'mallory': PBKDF2 iteration count"),
            "{err}"
        );
        let err = load_err(&format!("{ALICE_7}\n{BOB_6}\n{ALICE_7}\n"));
        assert_eq!(err, "line 3: user 'alice' is already defined on line 1");
        let err = load_err("justaname\n");
        assert_eq!(err, "line 1: expected 'user:password-hash'");
    }

    #[test]
    fn empty_file_loads_zero_users() {
        let file = TempFile::with_contents("pw", "# nobody yet\n");
        let store = Credentials::new();
        assert_eq!(store.load_password_file(&file.0), Ok(0));
        assert!(store.is_empty());
    }

    #[test]
    fn missing_file_error_names_path_and_os_error() {
        let file = TempFile::new("absent");
        let err = Credentials::new().load_password_file(&file.0).unwrap_err();
        assert!(err.starts_with(&file.0.display().to_string()), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
    }

    #[test]
    fn constant_time_eq_detects_any_difference() {
        let a = [7u8; HASH_LEN];
        assert!(constant_time_eq(&a, &a));
        for i in 0..HASH_LEN {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!constant_time_eq(&a, &b), "byte {i}");
        }
    }

    /// Runs `mosquitto_passwd` to write a real password file, then checks it is read. Skipped
    /// (with a note) where Mosquitto is not installed.
    #[test]
    fn reads_a_file_written_by_mosquitto_passwd() {
        if !Path::new(MOSQUITTO_PASSWD).exists() {
            eprintln!("skipped: {MOSQUITTO_PASSWD} not installed");
            return;
        }
        let file = TempFile::new("mosquitto");
        let run = |args: &[&str]| {
            let status = std::process::Command::new(MOSQUITTO_PASSWD)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "mosquitto_passwd {args:?}: {status}");
        };
        let path = file.0.to_str().unwrap();
        run(&["-c", "-b", path, "erin", "pbkdf2 pass"]);
        run(&["-H", "sha512", "-b", path, "frank", "legacy:pass"]);
        run(&["-b", path, "grace", "ünïcödé"]);
        let store = Credentials::new();
        assert_eq!(store.load_password_file(&file.0), Ok(3));
        assert_eq!(store.verify("erin", b"pbkdf2 pass"), Some(true));
        assert_eq!(store.verify("erin", b"pbkdf2 pas"), Some(false));
        assert_eq!(store.verify("frank", b"legacy:pass"), Some(true));
        assert_eq!(store.verify("frank", b"legacy"), Some(false));
        assert_eq!(store.verify("grace", "ünïcödé".as_bytes()), Some(true));
        let text = std::fs::read_to_string(&file.0).unwrap();
        assert!(text.contains("erin:$7$101$"), "{text}");
        assert!(text.contains("frank:$6$"), "{text}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn parse_line_never_panics(line in ".{0,200}") {
            let _ = parse_line(&line);
        }

        #[test]
        fn parse_line_never_panics_on_hash_shapes(
            kind in "[0-9]{0,2}", iters in "-?[0-9]{0,11}", salt in "[A-Za-z0-9+/=]{0,24}",
            hash in "[A-Za-z0-9+/=]{0,100}",
        ) {
            let _ = parse_line(&format!("u:${kind}${iters}${salt}${hash}"));
            let _ = parse_line(&format!("u:${kind}${salt}${hash}"));
        }

        #[test]
        fn hash_round_trips_and_rejects_other_passwords(
            password in "\\PC{0,40}", other in "\\PC{0,40}",
        ) {
            let line = hash_password(&password);
            let hash = PasswordHash::parse(&line).unwrap();
            prop_assert_eq!(hash.to_string(), line);
            prop_assert!(hash.verify(password.as_bytes()));
            prop_assert_eq!(hash.verify(other.as_bytes()), other == password);
        }
    }
}
