//! End to end over loopback: test phones dial in, type the PIN and talk; each hears the
//! others and never itself; a wrong PIN is refused after three tries; a vanished phone
//! is removed.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{metric, metrics, runtime, test_config, tone_prompts, tone_share, Phone};
use std::time::Duration;

const PIN: &str = "27182818";

#[test]
fn three_phones_hear_each_other_and_a_wrong_pin_is_refused() {
    let rt = runtime();
    let config = test_config(&[("other", "11223344"), ("team", PIN)], "41000-41199", "");
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();

    let tones = [440.0, 620.0, 1040.0];
    let mut phones: Vec<Phone> = tones.iter().map(|&f| Phone::new(bridge, f)).collect();
    for (i, p) in phones.iter_mut().enumerate() {
        assert_eq!(p.call(), 200, "phone {i} was not answered");
        if i == 0 {
            // Let the first caller hear the whole PIN prompt; the others barge in.
            std::thread::sleep(Duration::from_millis(800));
        }
        p.dial_digits(&format!("{PIN}#"));
        // Stagger joins so the first one is alone for a moment.
        std::thread::sleep(Duration::from_millis(1500));
    }
    let mut intruder = Phone::new(bridge, 1700.0);
    assert_eq!(intruder.call(), 200);
    intruder.dial_digits("11112222#33334444#55556666#");

    std::thread::sleep(Duration::from_secs(3));

    for (i, p) in phones.iter().enumerate() {
        let heard = p.last_heard(1.5);
        assert!(
            heard.len() >= 8000,
            "phone {i} heard only {} samples",
            heard.len()
        );
        for (j, &f) in tones.iter().enumerate() {
            let share = tone_share(&heard, f, 8000.0);
            if i == j {
                assert!(
                    share < 0.01,
                    "phone {i} hears itself ({f} Hz share {share:.3})"
                );
            } else {
                assert!(
                    share > 0.15,
                    "phone {i} misses phone {j} ({f} Hz share {share:.3})"
                );
            }
        }
        // The intruder never got in.
        assert!(
            tone_share(&heard, 1700.0, 8000.0) < 0.01,
            "phone {i} hears the intruder"
        );
    }

    // Prompts: everyone heard the PIN prompt; only the first heard "first participant".
    let first_prompt = |p: &Phone| {
        let r = p.received();
        let n = r.len().min(8000 * 6);
        tone_share(&r[..n], 2000.0, 8000.0)
    };
    assert!(
        tone_share(&phones[0].received()[..4000], 300.0, 8000.0) > 0.3,
        "no PIN prompt"
    );
    // Barge-in: the second caller typed at once, so the prompt stopped within a few frames.
    assert!(
        tone_share(&phones[1].received()[1600..4000], 300.0, 8000.0) < 0.05,
        "prompt not stopped by digits"
    );
    assert!(
        first_prompt(&phones[0]) > 0.005,
        "first caller was not told they are first"
    );
    assert!(
        first_prompt(&phones[1]) < 0.001,
        "second caller was told they are first"
    );

    // Three wrong PINs: the bridge says goodbye and hangs up.
    assert!(
        intruder.wait_for_bye(Duration::from_secs(10)),
        "no BYE after three wrong PINs"
    );
    let heard = intruder.received();
    assert!(
        tone_share(&heard, 380.0, 8000.0) > 0.001,
        "no goodbye prompt"
    );

    // One argon2 run for the room's PIN, however many type it; the wrong ones each cost
    // a full run.
    let page = metrics(server.metrics_addr().unwrap());
    assert_eq!(metric(&page, "sotto_pin_cache_hits_total"), 2, "{page}");
    assert_eq!(metric(&page, "sotto_pin_checks_total"), 1 + 3, "{page}");

    // Hang-ups are clean.
    for p in phones.iter_mut() {
        assert_eq!(p.hangup(), 200);
    }
    rt.block_on(server.stop());
}

#[test]
fn a_phone_that_vanishes_is_removed_and_others_stay() {
    let rt = runtime();
    let config = test_config(&[("team", PIN)], "41200-41399", "rtp_timeout_secs = 2");
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();
    let mut a = Phone::new(bridge, 440.0);
    let mut b = Phone::new(bridge, 620.0);
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    a.dial_digits(&format!("{PIN}#"));
    b.dial_digits(&format!("{PIN}#"));
    std::thread::sleep(Duration::from_secs(3));
    b.go_silent();
    assert!(
        b.wait_for_bye(Duration::from_secs(5)),
        "no BYE for a silent phone"
    );
    // The remaining member is alone now and keeps its call.
    std::thread::sleep(Duration::from_millis(500));
    let before = a.received().len();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        a.received().len() > before + 6000,
        "remaining member stopped receiving"
    );
    assert_eq!(a.hangup(), 200);
    rt.block_on(server.stop());
}

#[test]
fn hold_by_reinvite_stops_our_sending_and_resume_restarts_it() {
    let rt = runtime();
    let config = test_config(&[("team", PIN)], "41400-41599", "");
    let server = rt
        .block_on(sotto::server::start(config, tone_prompts()))
        .unwrap();
    let bridge = server.sip_addr();
    let mut a = Phone::new(bridge, 440.0);
    let mut b = Phone::new(bridge, 620.0);
    assert_eq!(a.call(), 200);
    assert_eq!(b.call(), 200);
    a.dial_digits(&format!("{PIN}#"));
    b.dial_digits(&format!("{PIN}#"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        tone_share(&a.last_heard(1.0), 620.0, 8000.0) > 0.3,
        "a does not hear b"
    );

    // b puts the bridge on hold: it only sends, so the bridge must stop sending to it.
    assert_eq!(b.reinvite("sendonly"), 200);
    std::thread::sleep(Duration::from_millis(300));
    let held = b.received().len();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        b.received().len() - held < 400,
        "the bridge kept sending to a member on hold"
    );
    // b's audio still reaches a.
    assert!(
        tone_share(&a.last_heard(0.8), 620.0, 8000.0) > 0.3,
        "a lost b during the hold"
    );

    assert_eq!(b.reinvite("sendrecv"), 200);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        tone_share(&b.last_heard(0.6), 440.0, 8000.0) > 0.3,
        "b does not hear a after resuming"
    );
    assert_eq!(a.hangup(), 200);
    assert_eq!(b.hangup(), 200);
    rt.block_on(server.stop());
}
