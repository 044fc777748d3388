use std::time::Duration;

use super::{sweep::MIN_SWEEP_AT, *};

fn minted(code: &str, appid: &str, openid: &str, key: &str) -> Minted {
    Minted {
        code: code.to_owned(),
        appid: appid.to_owned(),
        openid: openid.to_owned(),
        unionid: None,
        session_key: key.to_owned(),
    }
}

/// Tokens that live `ttl_secs` and are refused as soon as they are replaced.
fn without_grace(ttl_secs: u64) -> TokenLifetimes {
    TokenLifetimes {
        ttl: Duration::from_secs(ttl_secs),
        grace: Duration::ZERO,
    }
}

#[test]
fn a_code_is_exchanged_once_for_its_app_only() {
    let now = Instant::now();
    let mut state = State::new();
    state.insert_code(&minted("c1", "wxa", "o1", "k1"), None, now);

    assert_eq!(state.exchange("wxb", "c1", now), Exchange::Invalid);
    assert!(matches!(state.exchange("wxa", "c1", now), Exchange::Ok(id) if id.openid == "o1"));
    assert_eq!(state.exchange("wxa", "c1", now), Exchange::Used);
    assert_eq!(state.exchange("wxa", "nope", now), Exchange::Invalid);
}

#[test]
fn an_expired_code_is_invalid_even_when_used() {
    let now = Instant::now();
    let later = now + Duration::from_secs(2);
    let mut state = State::new();
    state.insert_code(
        &minted("c1", "wxa", "o1", "k1"),
        Some(now + Duration::from_secs(1)),
        now,
    );
    assert!(matches!(state.exchange("wxa", "c1", now), Exchange::Ok(_)));
    assert_eq!(state.exchange("wxa", "c1", later), Exchange::Invalid);
}

#[test]
fn expired_codes_are_swept_as_the_map_grows() {
    let now = Instant::now();
    let expired = Some(now);
    let mut state = State::new();
    for i in 0..(MIN_SWEEP_AT * 3) {
        state.insert_code(&minted(&format!("c{i}"), "wxa", "o1", "k"), expired, now);
    }
    assert!(
        state.codes.len() <= MIN_SWEEP_AT + 1,
        "{}",
        state.codes.len()
    );
}

#[test]
fn the_latest_mint_sets_the_current_session_key() {
    let now = Instant::now();
    let mut state = State::new();
    state.insert_code(&minted("c1", "wxa", "o1", "k1"), None, now);
    state.insert_code(&minted("c2", "wxa", "o1", "k2"), None, now);
    assert_eq!(state.session_key("wxa", "o1").as_deref(), Some("k2"));
    assert_eq!(state.session_key("wxb", "o1"), None);
    assert_eq!(state.session_key("wxa", "o2"), None);
}

#[test]
fn faults_come_out_in_order_each_as_often_as_asked() {
    let mut state = State::new();
    state.faults.push(Fault::errcode(-1).times(2));
    state.faults.push(Fault::errcode(45011).times(0));
    state.faults.push(Fault::errcode(40226));
    assert_eq!(state.faults.pending(), 3);

    let codes: Vec<i64> = std::iter::from_fn(|| state.faults.next(endpoint::JSCODE2SESSION))
        .map(|fault| {
            assert_eq!(fault.times, 1);
            fault.errcode
        })
        .collect();
    assert_eq!(codes, vec![-1, -1, 40226]);
    assert_eq!(state.faults.pending(), 0);
}

#[test]
fn a_fault_needs_only_the_fields_it_changes() {
    let fault: Fault = serde_json::from_str(r#"{"errcode":-1}"#).unwrap();
    assert_eq!(fault, Fault::errcode(-1));
    let fault: Fault = serde_json::from_str(r#"{"delay_ms":50,"times":3}"#).unwrap();
    assert_eq!(fault, Fault::delay(Duration::from_millis(50)).times(3));
    assert!(serde_json::from_str::<Fault>(r#"{"delay":50}"#).is_err());
}

const LIFETIMES: TokenLifetimes = TokenLifetimes {
    ttl: Duration::from_secs(7200),
    grace: Duration::from_secs(300),
};

fn counter() -> impl FnMut() -> String {
    let mut next = 0;
    move || {
        next += 1;
        format!("t{next}")
    }
}

#[test]
fn a_stable_token_is_handed_out_again_until_forced() {
    let now = Instant::now();
    let mut state = State::new();
    let mut tokens = counter();
    let mut issue = |state: &mut State, force, at| {
        state
            .tokens
            .issue("wxa", TokenKind::Stable, force, LIFETIMES, &mut tokens, at)
    };

    let first = issue(&mut state, false, now);
    let again = issue(&mut state, false, now + Duration::from_millis(1500));
    let forced = issue(&mut state, true, now + Duration::from_secs(2));

    assert_eq!(first.access_token, "t1");
    assert_eq!(first.expires_in, 7200);
    assert_eq!(again.access_token, "t1");
    assert_eq!(again.expires_in, 7199);
    assert_eq!(forced.access_token, "t2");
    assert_eq!(forced.expires_in, 7200);
    // The replaced token lives out its grace, then is "not latest".
    let in_grace = now + Duration::from_secs(200);
    let after_grace = now + Duration::from_secs(303);
    assert_eq!(state.tokens.check("t1", in_grace).as_deref(), Ok("wxa"));
    assert_eq!(
        state.tokens.check("t1", after_grace),
        Err(TokenRefusal::Invalid)
    );
    assert_eq!(state.tokens.check("t2", after_grace).as_deref(), Ok("wxa"));
}

#[test]
fn a_classic_token_is_new_each_time_and_leaves_stable_ones_alone() {
    let now = Instant::now();
    let mut state = State::new();
    let mut tokens = counter();
    let stable = state
        .tokens
        .issue("wxa", TokenKind::Stable, false, LIFETIMES, &mut tokens, now);
    let [one, two] = [(); 2].map(|()| {
        let classic = TokenKind::Classic;
        state
            .tokens
            .issue("wxa", classic, false, LIFETIMES, &mut tokens, now)
    });

    assert_ne!(one.access_token, two.access_token);
    let later = now + Duration::from_secs(301);
    assert_eq!(
        state.tokens.check(&one.access_token, later),
        Err(TokenRefusal::Invalid)
    );
    assert!(state.tokens.check(&two.access_token, later).is_ok());
    assert!(state.tokens.check(&stable.access_token, later).is_ok());
}

#[test]
fn tokens_expire_invalidate_and_belong_to_their_app() {
    let now = Instant::now();
    let short = without_grace(10);
    let mut state = State::new();
    let mut tokens = counter();
    let a = state
        .tokens
        .issue("wxa", TokenKind::Stable, false, short, &mut tokens, now);
    let b = state
        .tokens
        .issue("wxb", TokenKind::Stable, false, short, &mut tokens, now);

    assert_eq!(
        state.tokens.check(&b.access_token, now).as_deref(),
        Ok("wxb")
    );
    assert_eq!(
        state
            .tokens
            .check(&a.access_token, now + Duration::from_secs(10)),
        Err(TokenRefusal::Expired)
    );
    // An expired stable token is replaced by a new one.
    let renewed = state.tokens.issue(
        "wxa",
        TokenKind::Stable,
        false,
        short,
        &mut tokens,
        now + Duration::from_secs(11),
    );
    assert_ne!(renewed.access_token, a.access_token);

    let later = now + Duration::from_secs(12);
    assert_eq!(state.tokens.invalidate("wxa", later), 1);
    assert_eq!(
        state.tokens.check(&renewed.access_token, later),
        Err(TokenRefusal::Invalid)
    );
    assert!(state.tokens.check(&b.access_token, now).is_ok());
    assert_eq!(state.tokens.check("nope", now), Err(TokenRefusal::Invalid));
}

#[test]
fn replaced_tokens_are_swept_as_the_map_grows() {
    let now = Instant::now();
    let no_grace = without_grace(7200);
    let mut state = State::new();
    let mut tokens = counter();
    for _ in 0..(MIN_SWEEP_AT * 3) {
        state
            .tokens
            .issue("wxa", TokenKind::Classic, false, no_grace, &mut tokens, now);
    }
    assert!(
        state.tokens.len() <= MIN_SWEEP_AT + 1,
        "{}",
        state.tokens.len()
    );
}

fn record() -> PhoneRecord {
    PhoneRecord {
        phone_number: "13800138000".to_owned(),
        pure_phone_number: "13800138000".to_owned(),
        country_code: CountryCode::Text("86".to_owned()),
        timestamp: 1,
    }
}

#[test]
fn a_phone_code_is_exchanged_once_for_its_app_only() {
    let now = Instant::now();
    let mut state = State::new();
    state.insert_phone_code("p1".to_owned(), "wxa".to_owned(), record(), None, now);

    assert!(matches!(
        state.exchange_phone_code("wxb", "p1", now),
        Taken::Invalid
    ));
    assert!(matches!(
        state.exchange_phone_code("wxa", "p1", now),
        Taken::Ok(record) if record.pure_phone_number == "13800138000"
    ));
    assert!(matches!(
        state.exchange_phone_code("wxa", "p1", now),
        Taken::Used
    ));
    // Login codes and phone codes are different things.
    assert_eq!(state.exchange("wxa", "p1", now), Exchange::Invalid);
}

#[test]
fn scoped_faults_wait_for_their_endpoint() {
    let mut state = State::new();
    state
        .faults
        .push(Fault::errcode(40001).for_endpoint(endpoint::CHECK_SESSION));
    state
        .faults
        .push(Fault::errcode(-1).for_endpoint(endpoint::JSCODE2SESSION));
    state.faults.push(Fault::errcode(45009).times(2));

    let take = |state: &mut State, endpoint| state.faults.next(endpoint).map(|f| f.errcode);
    assert_eq!(take(&mut state, endpoint::STABLE_TOKEN), Some(45009));
    assert_eq!(take(&mut state, endpoint::JSCODE2SESSION), Some(-1));
    assert_eq!(take(&mut state, endpoint::JSCODE2SESSION), Some(45009));
    assert_eq!(take(&mut state, endpoint::JSCODE2SESSION), None);
    assert_eq!(state.faults.pending(), 1);
    assert_eq!(take(&mut state, endpoint::CHECK_SESSION), Some(40001));
    assert_eq!(state.faults.pending(), 0);
}

#[test]
fn a_fault_endpoint_round_trips_through_json() {
    let fault: Fault =
        serde_json::from_str(r#"{"errcode":40001,"endpoint":"checksession"}"#).unwrap();
    assert_eq!(
        fault,
        Fault::errcode(40001).for_endpoint(endpoint::CHECK_SESSION)
    );
}
