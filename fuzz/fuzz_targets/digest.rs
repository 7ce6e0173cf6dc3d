//! Fuzz target: `Authorization: Digest ...` values (`sotto::sip::digest`), with the
//! input read as UTF-8 (lossily, as the SIP parser hands header values over as text).
//!
//! Checked: an accepted value, written back with every parameter quoted, parses to the
//! same parameters; checking it against credentials never panics and never succeeds
//! (its nonce was not issued by the authenticator), and the same holds for a value that
//! did not parse.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto::config::DigestCredentials;
use sotto::sip::digest::{parse_authorization, Authenticator};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn origin() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    #[allow(clippy::disallowed_methods)] // one real instant is the clock's origin
    *T0.get_or_init(Instant::now)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let creds = DigestCredentials {
        user: "pbx".into(),
        realm: "sotto".into(),
        ha1_sha256: Some([0x11; 32]),
        ha1_md5: Some([0x22; 16]),
    };
    let mut auth = Authenticator::new([3; 32], origin());
    let source: IpAddr = "192.0.2.1".parse().expect("address");
    let verdict = auth.verify(origin(), source, "INVITE", [text.as_ref()], &creds);
    assert!(verdict.is_err(), "accepted a nonce that was never issued");

    let Ok(a) = parse_authorization(&text) else {
        return;
    };
    let mut again = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
        quote(&a.username),
        quote(&a.realm),
        quote(&a.nonce),
        quote(&a.uri),
        quote(&a.response),
        a.algorithm.token()
    );
    if let Some(q) = &a.qop {
        again.push_str(&format!(", qop={}", quote(q)));
    }
    if let Some(nc) = a.nc {
        again.push_str(&format!(", nc={nc:08x}"));
    }
    if let Some(c) = &a.cnonce {
        again.push_str(&format!(", cnonce={}", quote(c)));
    }
    let back = parse_authorization(&again)
        .unwrap_or_else(|e| panic!("our quoting does not parse back ({e}): {again}"));
    assert_eq!(back, a, "quoted form differs: {again}");
});
