//! Tests of [`NatsOptions`]: defaults, validation naming the field,
//! redaction, and YAML/TOML round trips.

use std::time::Duration;

use super::*;

fn full() -> NatsOptions {
    NatsOptions::default()
        .urls([
            "nats://127.0.0.1:4222",
            "tls://[::1]:4443",
            "nats://a-b.c_d",
        ])
        .name("orders")
        .connect_timeout(Duration::from_millis(1500))
        .reconnect(
            NatsReconnect::default()
                .max_attempts(7)
                .delays(Duration::from_millis(50), Duration::from_secs(2)),
        )
        .auth(NatsAuth::user_password("app", "pa55"))
        .tls(
            NatsTls::default()
                .ca_file("/tls/ca.pem")
                .client_cert("/tls/c.pem", "/tls/k.pem")
                .required(true),
        )
}

fn invalid_field(opts: &NatsOptions) -> String {
    let err = opts.validate("nats").expect_err("must be invalid");
    err.field().expect("names a field").to_owned()
}

#[test]
fn defaults_are_valid_and_point_at_loopback() {
    let opts = NatsOptions::default();
    assert_eq!(opts.urls, [DEFAULT_NATS_URL]);
    assert_eq!(opts.connect_timeout, Duration::from_secs(5));
    assert_eq!(opts.reconnect.max_attempts, None);
    assert_eq!(opts.auth, NatsAuth::None);
    assert_eq!(opts.tls, NatsTls::default());
    opts.validate("nats").unwrap();
    full().validate("nats").unwrap();
}

#[test]
fn validation_names_the_bad_field() {
    let cases: Vec<(NatsOptions, &str)> = vec![
        (
            NatsOptions::default().urls(Vec::<String>::new()),
            "nats.urls",
        ),
        (NatsOptions::default().url("127.0.0.1:4222"), "nats.urls[0]"),
        (
            NatsOptions::default().urls(["nats://a:1", "http://b"]),
            "nats.urls[1]",
        ),
        (NatsOptions::default().url("nats://:4222"), "nats.urls[0]"),
        (NatsOptions::default().url("nats://h:0"), "nats.urls[0]"),
        (NatsOptions::default().url("nats://h:99999"), "nats.urls[0]"),
        (NatsOptions::default().url("nats://h o"), "nats.urls[0]"),
        (NatsOptions::default().url("nats://[::1"), "nats.urls[0]"),
        (
            NatsOptions::default().urls(["nats://a", "ws://b"]),
            "nats.urls",
        ),
        (NatsOptions::default().name(" "), "nats.name"),
        (
            NatsOptions::default().connect_timeout(Duration::ZERO),
            "nats.connect_timeout",
        ),
        (
            NatsOptions::default().reconnect(NatsReconnect::default().max_attempts(0)),
            "nats.reconnect.max_attempts",
        ),
        (
            NatsOptions::default()
                .reconnect(NatsReconnect::default().delays(Duration::ZERO, Duration::ZERO)),
            "nats.reconnect.initial_delay",
        ),
        (
            NatsOptions::default().reconnect(
                NatsReconnect::default().delays(Duration::from_secs(2), Duration::from_secs(1)),
            ),
            "nats.reconnect.max_delay",
        ),
        (
            NatsOptions::default().auth(NatsAuth::token("")),
            "nats.auth.token",
        ),
        (
            NatsOptions::default().auth(NatsAuth::user_password("", "p")),
            "nats.auth.user",
        ),
        (
            NatsOptions::default().auth(NatsAuth::nkey("UABC")),
            "nats.auth.seed",
        ),
        (
            NatsOptions::default().auth(NatsAuth::creds_file("")),
            "nats.auth.path",
        ),
        (
            NatsOptions::default().tls(NatsTls {
                cert_file: Some("c.pem".into()),
                ..NatsTls::default()
            }),
            "nats.tls.key_file",
        ),
        (
            NatsOptions::default().tls(NatsTls {
                key_file: Some("k.pem".into()),
                ..NatsTls::default()
            }),
            "nats.tls.cert_file",
        ),
        (
            NatsOptions::default().tls(NatsTls::default().ca_file("")),
            "nats.tls.ca_file",
        ),
    ];
    for (opts, field) in cases {
        assert_eq!(invalid_field(&opts), field, "{opts:?}");
    }
}

#[test]
fn url_errors_say_what_is_wrong() {
    let reason = |url: &str| match NatsOptions::default().url(url).validate("n") {
        Err(ConfigError::Invalid { reason, .. }) => reason,
        other => panic!("{url}: {other:?}"),
    };
    assert_eq!(
        reason("localhost:4222"),
        "`localhost:4222` needs a scheme: nats://, tls://, ws:// or wss://"
    );
    assert_eq!(
        reason("http://h"),
        "scheme `http` is not one of nats, tls, ws, wss"
    );
    assert_eq!(reason("nats://h:x"), "port `x` is not between 1 and 65535");
    // A URL's password is not echoed in the error.
    assert_eq!(
        reason("nats://u:pw@"),
        "`nats://u:<redacted>@` has no valid host"
    );
    assert_eq!(
        reason("u:pw@h:4222"),
        "`u:<redacted>@h:4222` needs a scheme: nats://, tls://, ws:// or wss://"
    );
    for ok in [
        "nats://h",
        "nats://h:4222/",
        "tls://u:p@h:1",
        "wss://[::1]:443",
        "ws://TOKEN@h",
    ] {
        NatsOptions::default().url(ok).validate("n").unwrap();
    }
}

#[test]
fn reconnect_delay_doubles_up_to_the_cap() {
    let r = NatsReconnect::default();
    assert_eq!(r.delay(0), Duration::ZERO);
    assert_eq!(r.delay(1), Duration::ZERO);
    assert_eq!(r.delay(2), Duration::from_millis(100));
    assert_eq!(r.delay(3), Duration::from_millis(200));
    assert_eq!(r.delay(7), Duration::from_millis(3200));
    assert_eq!(r.delay(8), Duration::from_secs(4));
    assert_eq!(r.delay(usize::MAX), Duration::from_secs(4));
    let huge = NatsReconnect::default().delays(Duration::MAX, Duration::MAX);
    assert_eq!(huge.delay(40), Duration::MAX);
}

#[test]
fn debug_redacts_every_secret() {
    let secrets = [
        NatsOptions::default().auth(NatsAuth::token("tok-SECRET")),
        NatsOptions::default().auth(NatsAuth::user_password("app", "pw-SECRET")),
        NatsOptions::default().auth(NatsAuth::nkey("SUAseed-SECRET")),
        NatsOptions::default().url("nats://app:url-SECRET@h:4222"),
        NatsOptions::default().url("nats://tokSECRET@h:4222"),
    ];
    for opts in secrets {
        let text = format!("{opts:?} {:#?} {:?}", opts, opts.auth);
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
    }
    let text = format!("{:?}", full());
    assert!(
        text.contains("\"app\""),
        "the user name is not a secret: {text}"
    );
    assert!(text.contains("/tls/ca.pem"), "{text}");
}

#[test]
fn yaml_reads_a_hand_written_config() {
    let yaml = r#"
urls: [nats://10.1.0.1:4222, tls://10.1.0.2:4443]
name: billing
connect_timeout: 2s
reconnect:
  max_attempts: 30
  initial_delay: 250ms
auth:
  type: nkey
  seed: SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY
tls:
  ca_file: /etc/nats/ca.pem
"#;
    let opts: NatsOptions = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(opts.urls.len(), 2);
    assert_eq!(opts.name.as_deref(), Some("billing"));
    assert_eq!(opts.connect_timeout, Duration::from_secs(2));
    assert_eq!(opts.reconnect.max_attempts, Some(30));
    assert_eq!(opts.reconnect.initial_delay, Duration::from_millis(250));
    assert_eq!(opts.reconnect.max_delay, NatsReconnect::default().max_delay);
    assert!(matches!(&opts.auth, NatsAuth::Nkey { seed } if seed.starts_with("SUAC")));
    assert_eq!(
        opts.tls.ca_file.as_deref(),
        Some("/etc/nats/ca.pem".as_ref())
    );
    assert!(!opts.tls.required);
    opts.validate("nats").unwrap();
}

#[test]
fn unknown_fields_bare_numbers_and_unknown_auth_are_refused() {
    for yaml in [
        "urlz: [nats://h]",
        "connect_timeout: 5",
        "reconnect: {max_attemps: 3}",
        "auth: {type: kerberos}",
        "auth: {type: token, token: t, user: u}",
        "tls: {ca: x}",
    ] {
        let res = serde_yaml_ng::from_str::<NatsOptions>(yaml);
        assert!(res.is_err(), "{yaml} must be refused, got {res:?}");
    }
}

#[test]
fn yaml_and_toml_round_trip() {
    let cases = [
        NatsOptions::default(),
        full(),
        NatsOptions::default().auth(NatsAuth::token("t")),
        NatsOptions::default().auth(NatsAuth::nkey("SUAX")),
        NatsOptions::default().auth(NatsAuth::creds_file("/creds/app.creds")),
        NatsOptions::default().reconnect(NatsReconnect::default().max_attempts(3).unlimited()),
    ];
    for opts in cases {
        let yaml = serde_yaml_ng::to_string(&opts).unwrap();
        let back: NatsOptions = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, opts, "yaml:\n{yaml}");

        let toml_text = toml::to_string(&opts).unwrap();
        let back: NatsOptions = toml::from_str(&toml_text).unwrap();
        assert_eq!(back, opts, "toml:\n{toml_text}");
    }
}

#[test]
fn toml_reads_a_hand_written_config() {
    let text = r#"
urls = ["nats://127.0.0.1:4222"]
connect_timeout = "750ms"

[auth]
type = "user_password"
user = "app"
password = "pw"

[tls]
cert_file = "c.pem"
key_file = "k.pem"
required = true
"#;
    let opts: NatsOptions = toml::from_str(text).unwrap();
    assert_eq!(opts.connect_timeout, Duration::from_millis(750));
    assert_eq!(opts.auth, NatsAuth::user_password("app", "pw"));
    assert_eq!(
        opts.tls,
        NatsTls::default()
            .client_cert("c.pem", "k.pem")
            .required(true)
    );
    opts.validate("transport.nats").unwrap();
}
