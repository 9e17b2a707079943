//! Interoperability over TLS with clients nobody here wrote: Eclipse Mosquitto's command-line
//! clients (`mosquitto_pub`/`mosquitto_sub`, OpenSSL) and paho-mqtt for Python (the `ssl`
//! module, OpenSSL), against an in-process broker with a `[listener.tls]` listener on an
//! ephemeral port. Certificates are generated at test time (rcgen, `tests/tls/pki.rs`) into a
//! per-test temporary directory as PEM files; the server certificate names `localhost` and
//! 127.0.0.1, so the clients verify the host name and nothing runs `--insecure`.
//!
//! Covered: server-only TLS (QoS 0/1/2), mutual TLS (accepted, no certificate, a certificate of
//! another CA), `use_identity_as_username` with an ACL (MQTT 3.1.1 and 5), `min_version`,
//! certificate reload without dropping connections, and start-up errors (library and daemon).
//!
//! A missing `mosquitto_pub`/`mosquitto_sub`, python3 or paho-mqtt fails the test (never a
//! skip): `scripts/test` installs them.

mod common;
#[path = "tls/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::TestBroker;
use common::mosquitto::{self, finish, mosquitto_pub, text};
use mqtt_server::config::Config;
use mqtt_server::transport::tls::{TlsSettings, TlsVersion};
use mqtt_server::{Broker, ClientInfo, ConnectDecision, ConnectRequest, Hooks, QoS};
use pki::{Ca, Leaf, TempDir, dns, settings};
use rcgen::{CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose};
use tokio::process::{Child, Command};

/// `mosquitto_sub -F`: topic, QoS and payload of each message on one line.
const FORMAT: &str = "%t|%q|%p";
/// The daemon.
const BIN: &str = env!("CARGO_BIN_EXE_mqtt-server");

// ---------------------------------------------------------------------------------------------
// Certificates

/// The PEM files of one test, in its own temporary directory (removed at the end).
struct Pki {
    dir: TempDir,
    ca: Ca,
    /// `ca.pem`: what clients verify the server with, and the broker verifies clients with.
    ca_file: PathBuf,
}

/// A client certificate and its key, as files.
struct ClientFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new();
        let ca = Ca::new("interop CA");
        let ca_file = dir.write("ca.pem", ca.pem());
        Pki { dir, ca, ca_file }
    }

    /// Server-only TLS: `cert.pem`/`key.pem` for localhost and 127.0.0.1, signed by the CA.
    fn server_settings(&self) -> TlsSettings {
        settings(&self.dir, &self.ca.server("broker"), None)
    }

    /// Mutual TLS: the server settings plus `ca_file`, a client certificate required.
    fn mutual_settings(&self) -> TlsSettings {
        TlsSettings {
            ca_file: Some(self.ca_file.clone()),
            require_certificate: true,
            ..self.server_settings()
        }
    }

    /// Writes `leaf` as `<name>.crt` and `<name>.key`.
    fn write_client(&self, name: &str, leaf: &Leaf) -> ClientFiles {
        ClientFiles {
            cert: self.dir.write(&format!("{name}.crt"), &leaf.cert_pem),
            key: self.dir.write(&format!("{name}.key"), &leaf.key_pem),
        }
    }

    /// A client certificate with Common Name `cn` signed by `ca`, as files.
    fn client(&self, ca: &Ca, name: &str, cn: &str) -> ClientFiles {
        self.write_client(name, &ca.client(cn, Vec::new()))
    }
}

/// A path as a command-line argument (temporary paths are UTF-8 here).
fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// A broker with one TLS listener on 127.0.0.1:0.
fn tls_config(tls: TlsSettings) -> Config {
    let mut config = common::test_config();
    config.listeners[0].tls = Some(tls);
    config
}

// ---------------------------------------------------------------------------------------------
// mosquitto_pub / mosquitto_sub

/// Starts a client process with `OPENSSL_CONF` set.
fn spawn_with(program: &str, b: &TestBroker, args: &[&str], openssl_conf: Option<&Path>) -> Child {
    mosquitto::spawn(program, b, args, openssl_conf)
}

/// An OpenSSL configuration that caps every TLS context at TLS 1.2. `mosquitto_pub
/// --tls-version tlsv1.2` cannot make a 1.2-only client: libmosquitto 2.0 then disables the
/// versions below 1.2 only, and negotiates 1.3 with a server that offers it.
const OPENSSL_MAX_TLS_1_2: &str = "openssl_conf = default_conf\n\
    [default_conf]\nssl_conf = ssl_sect\n\
    [ssl_sect]\nsystem_default = system_default_sect\n\
    [system_default_sect]\nMaxProtocol = TLSv1.2\n";

/// Runs `mosquitto_pub` capped at TLS 1.2 (through `OPENSSL_CONF`), whatever its exit status.
async fn mosquitto_pub_tls_1_2(b: &TestBroker, pki: &Pki, args: &[&str]) -> Output {
    let conf = pki
        .dir
        .write("openssl-max-tls-1.2.cnf", OPENSSL_MAX_TLS_1_2);
    finish(
        spawn_with("mosquitto_pub", b, args, Some(&conf)),
        &format!("mosquitto_pub (TLS <= 1.2) {args:?}"),
    )
    .await
}

/// Runs `mosquitto_pub` and requires success.
async fn publish(b: &TestBroker, args: &[&str]) {
    let out = mosquitto_pub(b, args).await;
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed ({}); stderr: {}",
        out.status,
        text(&out.stderr)
    );
}

/// Runs `mosquitto_pub` and requires it to fail (its connection refused); returns its stderr.
async fn publish_refused(b: &TestBroker, args: &[&str], why: &str) -> String {
    let out = mosquitto_pub(b, args).await;
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "{why}: mosquitto_pub {args:?} should have been refused but succeeded; stderr: {stderr}"
    );
    stderr
}

/// Starts `mosquitto_sub` and waits until the broker holds `subscriptions` subscriptions.
async fn subscriber(b: &TestBroker, args: &[&str], subscriptions: usize) -> Child {
    mosquitto::subscriber(b, FORMAT, args, subscriptions).await
}

/// The lines of a subscriber started with `-C n`, sorted (libmosquitto hands a QoS 2 message
/// over only at PUBREL, so a later QoS 0 or 1 message may be printed first).
async fn received(child: Child) -> Vec<String> {
    let mut lines = mosquitto::received(child).await;
    lines.sort();
    lines
}

/// Waits until the broker counted `n` failed TLS handshakes (it counts them on the
/// connection's task, possibly after the client process has exited).
async fn wait_for_handshake_failures(b: &TestBroker, n: u64) {
    common::wait_until(&format!("{n} TLS handshake failure(s) counted"), || {
        b.broker.metrics().tls_handshake_failures >= n
    })
    .await;
    assert_eq!(
        b.broker.metrics().tls_handshake_failures,
        n,
        "TLS handshake failures counted"
    );
}

// ---------------------------------------------------------------------------------------------
// paho-mqtt (Python)

/// Runs `python3 tests/interop/paho_tls.py --port N args...`, requires exit code 0, and
/// returns its `OK ...` lines.
async fn paho(b: &TestBroker, args: &[&str]) -> Vec<String> {
    common::run_paho_script("paho_tls", b.addr.port(), args)
        .await
        .lines()
        .filter(|l| l.starts_with("OK "))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Server-only TLS

#[tokio::test]
async fn mosquitto_clients_round_trip_qos_0_1_2_over_tls() {
    let pki = Pki::new();
    let b = TestBroker::start_with(tls_config(pki.server_settings())).await;
    let ca = arg(&pki.ca_file);

    let sub = subscriber(
        &b,
        &["--cafile", ca, "-t", "tls/qos", "-q", "2", "-C", "3"],
        1,
    )
    .await;
    // QoS 1 and 2 first: mosquitto_pub exits only after PUBACK/PUBCOMP, so each is routed
    // before the next process starts, and -C 3 cannot stop before the QoS 0 message.
    publish(
        &b,
        &["--cafile", ca, "-t", "tls/qos", "-q", "1", "-m", "one"],
    )
    .await;
    publish(
        &b,
        &["--cafile", ca, "-t", "tls/qos", "-q", "2", "-m", "two"],
    )
    .await;
    publish(
        &b,
        &["--cafile", ca, "-t", "tls/qos", "-q", "0", "-m", "zero"],
    )
    .await;
    assert_eq!(
        received(sub).await,
        ["tls/qos|0|zero", "tls/qos|1|one", "tls/qos|2|two"],
        "topic|qos|payload of each delivery over TLS"
    );
    assert_eq!(b.broker.metrics().tls_handshake_failures, 0);

    // A client that trusts another CA refuses the broker's certificate.
    let other = Ca::new("unrelated CA");
    let other_ca = pki.dir.write("other-ca.pem", other.pem());
    publish_refused(
        &b,
        &["--cafile", arg(&other_ca), "-t", "tls/qos", "-m", "x"],
        "server certificate from a CA the client does not trust",
    )
    .await;
    wait_for_handshake_failures(&b, 1).await;
    b.stop().await;
}

/// Plain MQTT against a TLS listener: the CONNECT is not a TLS record, the handshake fails,
/// the client gets no CONNACK.
#[tokio::test]
async fn plain_mqtt_client_is_refused_by_a_tls_listener() {
    let pki = Pki::new();
    let b = TestBroker::start_with(tls_config(pki.server_settings())).await;
    publish_refused(
        &b,
        &["-t", "tls/plain", "-q", "1", "-m", "x"],
        "plain MQTT on a TLS listener",
    )
    .await;
    wait_for_handshake_failures(&b, 1).await;
    assert_eq!(b.broker.metrics().connections_current, 0);
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Mutual TLS

#[tokio::test]
async fn mutual_tls_admits_only_certificates_of_the_ca() {
    let pki = Pki::new();
    let b = TestBroker::start_with(tls_config(pki.mutual_settings())).await;
    let ca = arg(&pki.ca_file);
    let device = pki.client(&pki.ca, "device", "device-1");
    let rogue_ca = Ca::new("rogue CA");
    let rogue = pki.client(&rogue_ca, "rogue", "device-1");

    // With a certificate of the CA: accepted, for subscribing and publishing.
    let with_cert = [
        "--cafile",
        ca,
        "--cert",
        arg(&device.cert),
        "--key",
        arg(&device.key),
    ];
    let mut sub_args = with_cert.to_vec();
    sub_args.extend(["-t", "mtls/t", "-q", "1", "-C", "1"]);
    let sub = subscriber(&b, &sub_args, 1).await;
    let mut pub_args = with_cert.to_vec();
    pub_args.extend(["-t", "mtls/t", "-q", "1", "-m", "from a device"]);
    publish(&b, &pub_args).await;
    assert_eq!(received(sub).await, ["mtls/t|1|from a device"]);
    assert_eq!(b.broker.metrics().tls_handshake_failures, 0);

    // Without a certificate: refused in the handshake.
    let stderr = publish_refused(
        &b,
        &["--cafile", ca, "-t", "mtls/t", "-q", "1", "-m", "anonymous"],
        "no client certificate with require_certificate = true",
    )
    .await;
    eprintln!("no certificate: mosquitto_pub said: {stderr}");
    wait_for_handshake_failures(&b, 1).await;

    // With a certificate of another CA (same subject): refused in the handshake.
    let stderr = publish_refused(
        &b,
        &[
            "--cafile",
            ca,
            "--cert",
            arg(&rogue.cert),
            "--key",
            arg(&rogue.key),
            "-t",
            "mtls/t",
            "-q",
            "1",
            "-m",
            "rogue",
        ],
        "client certificate from another CA",
    )
    .await;
    eprintln!("rogue certificate: mosquitto_pub said: {stderr}");
    wait_for_handshake_failures(&b, 2).await;

    // Neither refused client got as far as MQTT: the device's PUBLISH is the only one.
    assert_eq!(
        b.broker.metrics().messages_received,
        1,
        "PUBLISH packets received"
    );
    common::wait_until("the device's connections closed", || {
        b.broker.metrics().connections_current == 0
    })
    .await;
    b.stop().await;
}

/// `ca_file` without `require_certificate`: a client without a certificate is served, a
/// certificate that is presented must chain to the CA.
#[tokio::test]
async fn optional_client_certificate_is_verified_when_presented() {
    let pki = Pki::new();
    let b = TestBroker::start_with(tls_config(TlsSettings {
        require_certificate: false,
        ..pki.mutual_settings()
    }))
    .await;
    let ca = arg(&pki.ca_file);
    let device = pki.client(&pki.ca, "device", "device-1");
    let rogue_ca = Ca::new("rogue CA");
    let rogue = pki.client(&rogue_ca, "rogue", "device-1");

    publish(
        &b,
        &["--cafile", ca, "-t", "opt/t", "-q", "1", "-m", "no cert"],
    )
    .await;
    publish(
        &b,
        &[
            "--cafile",
            ca,
            "--cert",
            arg(&device.cert),
            "--key",
            arg(&device.key),
            "-t",
            "opt/t",
            "-q",
            "1",
            "-m",
            "good cert",
        ],
    )
    .await;
    assert_eq!(b.broker.metrics().tls_handshake_failures, 0);
    publish_refused(
        &b,
        &[
            "--cafile",
            ca,
            "--cert",
            arg(&rogue.cert),
            "--key",
            arg(&rogue.key),
            "-t",
            "opt/t",
            "-q",
            "1",
            "-m",
            "rogue",
        ],
        "a presented certificate from another CA",
    )
    .await;
    wait_for_handshake_failures(&b, 1).await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. use_identity_as_username with an ACL

/// Mutual TLS, the certificate's identity as the user name, anonymous clients refused, and an
/// ACL that gives each user `users/<name>/#` only.
fn identity_config(pki: &Pki) -> Config {
    let mut config = tls_config(TlsSettings {
        use_identity_as_username: true,
        ..pki.mutual_settings()
    });
    config.listeners[0].allow_anonymous = Some(false);
    config.auth.acl_file = Some(pki.dir.write("acl", "pattern readwrite users/%u/#\n"));
    config
}

/// Runs the `identity` check of the paho script for `user` (whose certificate it uses), and
/// checks with an in-process subscriber to `users/#` (not subject to the ACL) that only the
/// allowed message was routed.
async fn paho_identity(protocol: &str, claim: Option<&str>) {
    let pki = Pki::new();
    let b = TestBroker::start_with(identity_config(&pki)).await;
    let alice = pki.client(&pki.ca, "alice", "alice");
    let observer = b.broker.local_client("observer");
    observer
        .subscribe("users/#", QoS::AtLeastOnce)
        .expect("valid filter");

    let mut args = vec![
        "--ca",
        arg(&pki.ca_file),
        "--cert",
        arg(&alice.cert),
        "--key",
        arg(&alice.key),
        "--protocol",
        protocol,
        "--user",
        "alice",
    ];
    if let Some(claim) = claim {
        args.extend(["--claim", claim]);
    }
    args.push("identity");
    let ok = paho(&b, &args).await;
    assert_eq!(
        ok,
        [
            format!("OK SUBACK grants users/alice/x and refuses users/bob/x (MQTT {protocol})"),
            format!(
                "OK PUBLISH to users/alice/x delivered, to users/bob/x refused (MQTT {protocol})"
            ),
        ]
    );
    // The refused PUBLISH to users/bob/x came first from the same connection: had it been
    // routed, it would be queued before this one.
    let first = tokio::time::timeout(common::WAIT, observer.recv())
        .await
        .expect("the allowed message reaches the observer")
        .expect("broker running");
    assert_eq!(
        (&*first.topic, &first.payload[..]),
        ("users/alice/x", &b"mine"[..])
    );
    assert!(
        observer.try_recv().is_none(),
        "only the allowed message was routed"
    );
    assert!(
        b.broker.metrics().acl_denied >= 1,
        "the refused PUBLISH is counted in acl_denied"
    );
    b.stop().await;
}

#[tokio::test]
async fn paho_certificate_identity_is_the_acl_user_mqtt_3_1_1() {
    paho_identity("3.1.1", None).await;
}

#[tokio::test]
async fn paho_certificate_identity_is_the_acl_user_mqtt_5() {
    paho_identity("5", None).await;
}

/// The CONNECT's user name is not what the ACL sees: the certificate says alice, the client
/// claims bob, and it gets alice's rights (and not bob's).
#[tokio::test]
async fn paho_certificate_identity_wins_over_the_claimed_user_name() {
    paho_identity("5", Some("bob")).await;
}

/// A certificate without a Common Name: its first Subject Alternative Name is the user name.
#[tokio::test]
async fn paho_first_san_is_the_user_name_without_a_common_name() {
    let pki = Pki::new();
    let b = TestBroker::start_with(identity_config(&pki)).await;
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![dns("carol"), dns("dave")];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let carol = pki.write_client("carol", &pki.ca.issue(params));
    let ok = paho(
        &b,
        &[
            "--ca",
            arg(&pki.ca_file),
            "--cert",
            arg(&carol.cert),
            "--key",
            arg(&carol.key),
            "--protocol",
            "5",
            "--user",
            "carol",
            "identity",
        ],
    )
    .await;
    assert_eq!(
        ok,
        [
            "OK SUBACK grants users/carol/x and refuses users/bob/x (MQTT 5)",
            "OK PUBLISH to users/carol/x delivered, to users/bob/x refused (MQTT 5)",
        ]
    );
    b.stop().await;
}

/// A certificate of the CA with neither a Common Name nor a Subject Alternative Name gives no
/// user name: the handshake succeeds, the CONNACK refuses (MQTT 5: 0x87 Not authorized;
/// 3.1.1: 0x05 Not authorized).
#[tokio::test]
async fn certificate_without_identity_is_refused_in_connack() {
    let pki = Pki::new();
    let b = TestBroker::start_with(identity_config(&pki)).await;
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.distinguished_name = DistinguishedName::new();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let nobody = pki.write_client("nobody", &pki.ca.issue(params));

    let ok = paho(
        &b,
        &[
            "--ca",
            arg(&pki.ca_file),
            "--cert",
            arg(&nobody.cert),
            "--key",
            arg(&nobody.key),
            "--protocol",
            "5",
            "refused",
        ],
    )
    .await;
    assert_eq!(ok, ["OK CONNACK 0x87 (MQTT 5)"]);
    let stderr = publish_refused(
        &b,
        &[
            "--cafile",
            arg(&pki.ca_file),
            "--cert",
            arg(&nobody.cert),
            "--key",
            arg(&nobody.key),
            "-V",
            "mqttv311",
            "-t",
            "users/nobody/x",
            "-q",
            "1",
            "-m",
            "x",
        ],
        "a certificate without identity (MQTT 3.1.1)",
    )
    .await;
    assert!(
        stderr.contains("not authorised"),
        "CONNACK 0x05 (mosquitto_pub prints 'Connection Refused: not authorised'): {stderr}"
    );
    assert_eq!(
        b.broker.metrics().tls_handshake_failures,
        0,
        "the handshakes succeeded"
    );
    assert_eq!(b.broker.metrics().connections_current, 0);
    b.stop().await;
}

/// What an application's hooks see as the user name of a client authenticated by its
/// certificate: the identity, not a user name the CONNECT claims (a hook that bans a user or
/// limits its connections must not be fooled by the claim).
#[derive(Debug, Default)]
struct SeenUsers {
    on_connect: std::sync::Mutex<Vec<Option<String>>>,
    on_connected: std::sync::Mutex<Vec<Option<String>>>,
}

#[async_trait::async_trait]
impl Hooks for SeenUsers {
    async fn on_connect(
        &self,
        request: &ConnectRequest<'_>,
        builtin: ConnectDecision,
    ) -> ConnectDecision {
        if let Ok(mut seen) = self.on_connect.lock() {
            seen.push(request.username.map(str::to_owned));
        }
        builtin
    }

    fn on_connected(&self, client: &ClientInfo) {
        if let Ok(mut seen) = self.on_connected.lock() {
            seen.push(client.username.as_deref().map(str::to_owned));
        }
    }
}

#[tokio::test]
async fn hooks_see_the_certificate_identity_not_the_claimed_user_name() {
    let pki = Pki::new();
    let seen = std::sync::Arc::new(SeenUsers::default());
    let b = TestBroker::start_with_hooks(identity_config(&pki), seen.clone()).await;
    let alice = pki.client(&pki.ca, "alice", "alice");
    let ok = paho(
        &b,
        &[
            "--ca",
            arg(&pki.ca_file),
            "--cert",
            arg(&alice.cert),
            "--key",
            arg(&alice.key),
            "--protocol",
            "5",
            "--user",
            "alice",
            "--claim",
            "bob",
            "identity",
        ],
    )
    .await;
    assert_eq!(ok.len(), 2, "{ok:?}");
    let alice = vec![Some("alice".to_owned())];
    assert_eq!(
        *seen.on_connected.lock().expect("not poisoned"),
        alice,
        "ClientInfo::username in on_connected"
    );
    assert_eq!(
        *seen.on_connect.lock().expect("not poisoned"),
        alice,
        "ConnectRequest::username in on_connect"
    );
    b.stop().await;
}

/// A CA may sign whatever Common Name it is asked for. An identity containing '/', '+' or '#'
/// gets no `users/%u/#` pattern (as in Mosquitto): with '+' it would otherwise subscribe to
/// every user's topics, with '/' reach into another user's levels.
#[tokio::test]
async fn paho_identity_with_wildcards_or_slashes_gets_no_pattern() {
    let pki = Pki::new();
    let b = TestBroker::start_with(identity_config(&pki)).await;
    let cases = [
        ("plus", "+", "users/+/x", None),
        ("hash", "#", "users/#", None),
        (
            "slash",
            "alice/x",
            "users/alice/x/#",
            Some("users/alice/x/y"),
        ),
    ];
    for (name, cn, filter, topic) in cases {
        let files = pki.client(&pki.ca, name, cn);
        let mut args = vec![
            "--ca",
            arg(&pki.ca_file),
            "--cert",
            arg(&files.cert),
            "--key",
            arg(&files.key),
            "--user",
            cn,
            "--filter",
            filter,
        ];
        if let Some(topic) = topic {
            args.extend(["--topic", topic]);
        }
        args.push("unsafe");
        let ok = paho(&b, &args).await;
        assert_eq!(
            ok,
            [format!("OK identity '{cn}' gets no %u pattern")],
            "{name}"
        );
    }
    assert_eq!(
        b.broker.subscription_count(),
        0,
        "no subscription was granted"
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. min_version

#[tokio::test]
async fn min_version_1_3_refuses_tls_1_2_clients() {
    let pki = Pki::new();
    let b = TestBroker::start_with(tls_config(TlsSettings {
        min_version: TlsVersion::V1_3,
        ..pki.server_settings()
    }))
    .await;
    let ca = arg(&pki.ca_file);

    let ok = paho(
        &b,
        &[
            "--ca",
            ca,
            "--tls-max",
            "1.2",
            "--expect",
            "refused",
            "version",
        ],
    )
    .await;
    assert_eq!(ok, ["OK TLS <= 1.2 client refused in the handshake"]);
    wait_for_handshake_failures(&b, 1).await;
    let out = mosquitto_pub_tls_1_2(
        &b,
        &pki,
        &["--cafile", ca, "-t", "v/t", "-q", "1", "-m", "x"],
    )
    .await;
    assert!(
        !out.status.success(),
        "mosquitto_pub capped at TLS 1.2 should be refused by a min_version 1.3 listener; \
         stderr: {}",
        text(&out.stderr)
    );
    wait_for_handshake_failures(&b, 2).await;

    let ok = paho(&b, &["--ca", ca, "--tls-max", "1.3", "version"]).await;
    assert_eq!(ok, ["OK TLS <= 1.3 client accepted with TLSv1.3"]);
    publish(
        &b,
        &[
            "--cafile",
            ca,
            "--tls-version",
            "tlsv1.3",
            "-t",
            "v/t",
            "-q",
            "1",
            "-m",
            "x",
        ],
    )
    .await;
    assert_eq!(b.broker.metrics().tls_handshake_failures, 2);
    b.stop().await;
}

/// The control for the test above: the same TLS 1.2 clients are served by a default
/// (`min_version = "1.2"`) listener, and negotiate TLS 1.2.
#[tokio::test]
async fn min_version_1_2_serves_tls_1_2_clients() {
    let pki = Pki::new();
    let b = TestBroker::start_with(tls_config(pki.server_settings())).await;
    let ca = arg(&pki.ca_file);
    let ok = paho(&b, &["--ca", ca, "--tls-max", "1.2", "version"]).await;
    assert_eq!(ok, ["OK TLS <= 1.2 client accepted with TLSv1.2"]);
    let out = mosquitto_pub_tls_1_2(
        &b,
        &pki,
        &["--cafile", ca, "-t", "v/t", "-q", "1", "-m", "x"],
    )
    .await;
    assert!(
        out.status.success(),
        "mosquitto_pub capped at TLS 1.2 against a min_version 1.2 listener failed ({}); \
         stderr: {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(b.broker.metrics().tls_handshake_failures, 0);
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Certificate reload

#[tokio::test]
async fn reload_switches_certificates_without_dropping_connections() {
    let pki = Pki::new();
    let b = TestBroker::start_with(tls_config(pki.server_settings())).await;
    let old_ca = arg(&pki.ca_file);

    let sub = subscriber(
        &b,
        &["--cafile", old_ca, "-t", "reload/t", "-q", "1", "-C", "2"],
        1,
    )
    .await;
    publish(
        &b,
        &[
            "--cafile", old_ca, "-t", "reload/t", "-q", "1", "-m", "before",
        ],
    )
    .await;

    // New certificate and key from a new CA, in the same files; then the reload (SIGHUP).
    let new = Ca::new("renewed CA");
    let leaf = new.server("broker");
    pki.dir.write("cert.pem", &leaf.cert_pem);
    pki.dir.write("key.pem", &leaf.key_pem);
    let new_ca = pki.dir.write("new-ca.pem", new.pem());
    b.broker.reload().expect("reload with valid new files");

    // A new client that trusts only the old CA: refused (it rejects the new certificate).
    publish_refused(
        &b,
        &[
            "--cafile",
            old_ca,
            "-t",
            "reload/t",
            "-q",
            "1",
            "-m",
            "old trust",
        ],
        "client trusting only the old CA after the reload",
    )
    .await;
    wait_for_handshake_failures(&b, 1).await;
    // A new client that trusts the new CA: served; its message reaches the old connection.
    publish(
        &b,
        &[
            "--cafile",
            arg(&new_ca),
            "-t",
            "reload/t",
            "-q",
            "1",
            "-m",
            "after",
        ],
    )
    .await;
    assert_eq!(
        received(sub).await,
        ["reload/t|1|after", "reload/t|1|before"],
        "the subscriber connected before the reload kept receiving"
    );
    b.stop().await;
}

/// A reload whose files are broken changes nothing: the error names the file, new clients are
/// still served the previous certificate.
#[tokio::test]
async fn failed_reload_keeps_the_previous_certificate() {
    let pki = Pki::new();
    let b = TestBroker::start_with(tls_config(pki.server_settings())).await;
    let ca = arg(&pki.ca_file);
    // A key that is not the certificate's.
    let key_file = pki.dir.write("key.pem", pki.ca.server("other").key_pem);
    let err = b.broker.reload().expect_err("a key of another certificate");
    assert!(
        err.contains(arg(&key_file)),
        "the error names the key file: {err}"
    );
    publish(
        &b,
        &[
            "--cafile",
            ca,
            "-t",
            "reload/t",
            "-q",
            "1",
            "-m",
            "still served",
        ],
    )
    .await;
    assert_eq!(b.broker.metrics().tls_handshake_failures, 0);
    b.stop().await;
}

/// Mutual TLS with the client CA rotated: after the reload, certificates of the old CA are
/// refused and those of the new CA accepted, while a client connected with an old certificate
/// stays connected.
#[tokio::test]
async fn reload_rotates_the_client_ca_without_dropping_connections() {
    let pki = Pki::new();
    let b = TestBroker::start_with(tls_config(pki.mutual_settings())).await;
    let server_ca = pki.dir.write("server-ca.pem", pki.ca.pem());
    let server_ca = arg(&server_ca);
    let old = pki.client(&pki.ca, "old-device", "device-1");
    let sub = subscriber(
        &b,
        &[
            "--cafile",
            server_ca,
            "--cert",
            arg(&old.cert),
            "--key",
            arg(&old.key),
            "-t",
            "rotate/t",
            "-q",
            "1",
            "-C",
            "1",
        ],
        1,
    )
    .await;

    // ca.pem (the broker's ca_file) now holds only the new client CA.
    let new_ca = Ca::new("new client CA");
    pki.dir.write("ca.pem", new_ca.pem());
    let new = pki.client(&new_ca, "new-device", "device-2");
    b.broker.reload().expect("reload with a valid new CA file");

    publish_refused(
        &b,
        &[
            "--cafile",
            server_ca,
            "--cert",
            arg(&old.cert),
            "--key",
            arg(&old.key),
            "-t",
            "rotate/t",
            "-q",
            "1",
            "-m",
            "old device",
        ],
        "a certificate of the client CA removed by the reload",
    )
    .await;
    wait_for_handshake_failures(&b, 1).await;
    publish(
        &b,
        &[
            "--cafile",
            server_ca,
            "--cert",
            arg(&new.cert),
            "--key",
            arg(&new.key),
            "-t",
            "rotate/t",
            "-q",
            "1",
            "-m",
            "new device",
        ],
    )
    .await;
    assert_eq!(
        received(sub).await,
        ["rotate/t|1|new device"],
        "the client connected with an old certificate still receives"
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Start-up errors

/// The ways a listener's certificate files can be wrong, each with the file the error must name.
fn broken_settings(pki: &Pki) -> Vec<(&'static str, TlsSettings, PathBuf)> {
    let good = pki.server_settings();

    let missing_key = pki.dir.path("no-such-key.pem");

    let other = pki.ca.server("other");
    let foreign_key = pki.dir.write("foreign-key.pem", &other.key_pem);

    let mut params = pki.ca.server_params("expired");
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let expired = pki.ca.issue(params);
    let expired_cert = pki.dir.write("expired-cert.pem", &expired.cert_pem);
    let expired_key = pki.dir.write("expired-key.pem", &expired.key_pem);

    let missing_ca = pki.dir.path("no-such-ca.pem");

    vec![
        (
            "missing key file",
            TlsSettings {
                key_file: missing_key.clone(),
                ..good.clone()
            },
            missing_key,
        ),
        (
            "key of another certificate",
            TlsSettings {
                key_file: foreign_key.clone(),
                ..good.clone()
            },
            foreign_key,
        ),
        (
            "expired certificate",
            TlsSettings {
                cert_file: expired_cert.clone(),
                key_file: expired_key,
                ..good.clone()
            },
            expired_cert,
        ),
        (
            "missing CA file",
            TlsSettings {
                ca_file: Some(missing_ca.clone()),
                require_certificate: true,
                ..good
            },
            missing_ca,
        ),
    ]
}

#[tokio::test]
async fn start_fails_naming_the_broken_certificate_file() {
    let pki = Pki::new();
    for (case, tls, path) in broken_settings(&pki) {
        let broker = Broker::new(tls_config(tls));
        let err = match broker.start().await {
            Ok(()) => panic!("{case}: the broker started"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(arg(&path)),
            "{case}: the error names {}: {err}",
            path.display()
        );
        assert!(
            broker.local_addrs().is_empty(),
            "{case}: nothing listens after a failed start"
        );
        eprintln!("{case}: {err}");
    }
}

#[tokio::test]
async fn daemon_exits_non_zero_naming_the_broken_certificate_file() {
    let pki = Pki::new();
    for (i, (case, tls, path)) in broken_settings(&pki).into_iter().enumerate() {
        let quoted = |p: &Path| toml::Value::String(arg(p).to_owned()).to_string();
        let mut toml = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nallow_anonymous = true\n\n[listener.tls]\n\
             cert_file = {}\nkey_file = {}\nrequire_certificate = {}\n",
            quoted(&tls.cert_file),
            quoted(&tls.key_file),
            tls.require_certificate
        );
        if let Some(ca) = &tls.ca_file {
            toml.push_str(&format!("ca_file = {}\n", quoted(ca)));
        }
        let config = pki.dir.write(&format!("broken-{i}.toml"), toml);
        let child = Command::new(BIN)
            .args(["--config", arg(&config), "--log-level", "warn"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start mqtt-server");
        let out = finish(child, &format!("mqtt-server ({case})")).await;
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{case}: the daemon should fail ({}); stdout: {stdout}",
            out.status
        );
        assert!(
            stderr.contains(arg(&path)),
            "{case}: stderr names {}: {stderr}",
            path.display()
        );
        assert!(
            !stdout.contains("listening on"),
            "{case}: nothing listens; stdout: {stdout}"
        );
    }
}
