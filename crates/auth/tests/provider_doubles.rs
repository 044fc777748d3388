//! The login-provider interface is not shaped after WeChat alone: a double
//! shaped like Alipay (no session secret; signed requests and responses; a
//! per-app content key) and one shaped like Douyin (a `code` plus an
//! `anonymous_code` giving two subjects) log users in through auth's own
//! login of a code, on the in-process stores, and open their sealed data
//! through the same trait the user service calls.

#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use aes::cipher::{
    BlockModeDecrypt as _, BlockModeEncrypt as _, KeyIvInit as _, block_padding::Pkcs7,
};
use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use wxlogin_auth::{
    config::Apps,
    error::AuthError,
    limit::{Budgets, Limiter},
    service::login::{Logins, SessionClient},
    store::{SessionPolicy, Stores, memory},
};
use wxlogin_common::{SecretString, clock::Clock};
use wxlogin_provider::{
    ErrorKind, Exchanged, Expectations, LoginCode, LoginProvider, OpenedData, PhoneNumber, Profile,
    ProviderError, Sealed, SessionSecret, Signed, Subject, SubjectKind,
};

const APPID: &str = "2021000000000001";

// ---- shared by the doubles ------------------------------------------------

fn hmac_hex(key: &[u8], message: &str) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn seal(key: &[u8; 16], iv: &[u8; 16], plain: &Value) -> String {
    let plain = plain.to_string();
    let mut buf = plain.as_bytes().to_vec();
    buf.resize(plain.len() + 16, 0);
    let sealed = cbc::Encryptor::<aes::Aes128>::new(key.into(), iv.into())
        .encrypt_padded::<Pkcs7>(&mut buf, plain.len())
        .unwrap();
    STANDARD.encode(sealed)
}

/// AES-128-CBC with PKCS#7, as both providers seal user data; whatever is
/// wrong past the base64 is one `DataInvalid`.
fn unseal(
    provider: &'static str,
    key: &[u8],
    iv: &[u8],
    data: &str,
) -> Result<OpenedData, ProviderError> {
    let malformed = |what| ProviderError::new(provider, ErrorKind::DataMalformed, what);
    let invalid = || ProviderError::new(provider, ErrorKind::DataInvalid, "the data does not open");
    let mut buf = STANDARD
        .decode(data)
        .map_err(|_| malformed("data is not base64"))?;
    let cipher = cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
        .map_err(|_| malformed("key or iv is not 16 bytes"))?;
    let plain = cipher
        .decrypt_padded::<Pkcs7>(&mut buf)
        .map_err(|_| invalid())?;
    serde_json::from_slice(plain).map_err(|_| invalid())
}

fn unsupported(provider: &'static str, what: &'static str) -> ProviderError {
    ProviderError::new(provider, ErrorKind::Unsupported, what)
}

fn text(data: &OpenedData, name: &str) -> Option<String> {
    data.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// The nickname and the avatar (under the provider's name for it).
fn profile(data: &OpenedData, avatar: &str) -> Profile {
    Profile {
        nickname: text(data, "nickName"),
        avatar_url: text(data, avatar),
        ..Profile::default()
    }
}

/// The number in the provider's field `number`, of `country_code`.
fn phone(
    provider: &'static str,
    data: &OpenedData,
    number: &str,
    country_code: String,
) -> Result<PhoneNumber, ProviderError> {
    let number = text(data, number)
        .ok_or_else(|| ProviderError::new(provider, ErrorKind::DataInvalid, "no phone number"))?;
    Ok(PhoneNumber {
        phone_number: number.clone(),
        pure_phone_number: number,
        country_code,
    })
}

// ---- Alipay ----------------------------------------------------------------

/// Alipay's open platform, in process: every request is signed with the
/// app's key, every response with the platform's. (HMAC-SHA256 stands in
/// for Alipay's RSA2 signatures.)
struct AlipayPlatform {
    app_keys: BTreeMap<String, Vec<u8>>,
    platform_key: Vec<u8>,
    users: BTreeMap<String, String>,
    /// Answers with a signature that does not match, as a tampering proxy
    /// would.
    tamper: bool,
}

/// The canonical form both sides sign: `k=v` pairs sorted by key, `&`
/// between them, `sign` left out.
fn canonical(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .filter(|(key, _)| key.as_str() != "sign")
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

impl AlipayPlatform {
    /// `alipay.system.oauth.token`: an auth code for the user's id.
    fn call(&self, request: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut answer = BTreeMap::new();
        let signed = self
            .app_keys
            .get(&request["app_id"])
            .is_some_and(|key| request.get("sign") == Some(&hmac_hex(key, &canonical(request))));
        match (signed, self.users.get(&request["code"])) {
            (false, _) => answer.insert("code".into(), "40006".into()),
            (true, None) => answer.insert("code".into(), "40002".into()),
            (true, Some(user_id)) => {
                answer.insert("user_id".into(), user_id.clone());
                answer.insert("code".into(), "10000".into())
            }
        };
        let mut sign = hmac_hex(&self.platform_key, &canonical(&answer));
        if self.tamper {
            sign.replace_range(..1, if sign.starts_with('0') { "1" } else { "0" });
        }
        answer.insert("sign".into(), sign);
        answer
    }
}

#[derive(Debug)]
struct Alipay {
    platform: Arc<AlipayPlatformHandle>,
    app_key: Vec<u8>,
    platform_key: Vec<u8>,
    /// The per-app AES key sealed data opens with.
    content_key: [u8; 16],
}

/// The platform, shown without its keys.
struct AlipayPlatformHandle(AlipayPlatform);

impl std::fmt::Debug for AlipayPlatformHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlipayPlatform")
    }
}

const ALIPAY: &str = "Alipay";

#[async_trait]
impl LoginProvider for Alipay {
    fn name(&self) -> &'static str {
        ALIPAY
    }

    async fn exchange(&self, appid: &str, login: &LoginCode) -> Result<Exchanged, ProviderError> {
        let mut request: BTreeMap<String, String> = [
            ("app_id", appid),
            ("method", "alipay.system.oauth.token"),
            ("grant_type", "authorization_code"),
            ("code", &login.code),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        request.insert("sign".into(), hmac_hex(&self.app_key, &canonical(&request)));
        let answer = self.platform.0.call(&request);
        if answer.get("sign") != Some(&hmac_hex(&self.platform_key, &canonical(&answer))) {
            return Err(ProviderError::new(
                ALIPAY,
                ErrorKind::Failed,
                "the answer's signature does not verify",
            ));
        }
        match answer["code"].as_str() {
            "10000" => Ok(Exchanged {
                subject: Subject {
                    kind: SubjectKind::UserId,
                    id: answer["user_id"].clone(),
                },
                others: Vec::new(),
                union_id: None,
                session_secret: None,
            }),
            "40002" => Err(ProviderError::new(
                ALIPAY,
                ErrorKind::CodeRefused,
                "invalid auth code",
            )),
            _ => {
                Err(
                    ProviderError::new(ALIPAY, ErrorKind::CredentialsRefused, "invalid signature")
                        .with_code(40006),
                )
            }
        }
    }

    fn open(
        &self,
        sealed: &Sealed<'_>,
        secret: Option<&SessionSecret>,
        _expect: &Expectations<'_>,
    ) -> Result<OpenedData, ProviderError> {
        assert!(secret.is_none(), "Alipay has no session secret");
        // Alipay seals with the per-app key and a zero iv.
        unseal(ALIPAY, &self.content_key, &[0; 16], sealed.data)
    }

    fn verify(&self, _appid: &str, signed: &Signed<'_>, secret: Option<&SessionSecret>) -> bool {
        secret.is_none() && hmac_hex(&self.platform_key, signed.content) == signed.signature
    }

    fn profile(&self, opened: &OpenedData) -> Profile {
        profile(opened, "avatar")
    }

    fn phone_in(&self, opened: &OpenedData) -> Result<PhoneNumber, ProviderError> {
        phone(ALIPAY, opened, "mobile", "86".to_owned())
    }

    async fn phone_number(&self, _: &str, _: &str, _: &str) -> Result<PhoneNumber, ProviderError> {
        Err(unsupported(
            ALIPAY,
            "Alipay seals the phone number; there is no phone code",
        ))
    }

    async fn session_secret_valid(
        &self,
        _: &str,
        _: &str,
        _: &SessionSecret,
    ) -> Result<bool, ProviderError> {
        Err(unsupported(ALIPAY, "Alipay has no session secret"))
    }
}

// ---- Douyin ----------------------------------------------------------------

#[derive(Debug)]
struct Douyin;

const DOUYIN: &str = "Douyin";

#[async_trait]
impl LoginProvider for Douyin {
    fn name(&self) -> &'static str {
        DOUYIN
    }

    /// `jscode2session` with both codes: the user's openid and the device's
    /// anonymous_openid, one session_key.
    async fn exchange(&self, _appid: &str, login: &LoginCode) -> Result<Exchanged, ProviderError> {
        let anonymous = login.anonymous_code.as_ref().map(|code| Subject {
            kind: SubjectKind::AnonymousOpenId,
            id: format!("anon-{code}"),
        });
        Ok(Exchanged {
            subject: Subject {
                kind: SubjectKind::OpenId,
                id: format!("open-{}", login.code),
            },
            others: anonymous.into_iter().collect(),
            union_id: Some(format!("union-{}", login.code)),
            session_secret: Some(SessionSecret::new(STANDARD.encode(douyin_key(&login.code)))),
        })
    }

    fn open(
        &self,
        sealed: &Sealed<'_>,
        secret: Option<&SessionSecret>,
        expect: &Expectations<'_>,
    ) -> Result<OpenedData, ProviderError> {
        let malformed = |what| ProviderError::new(DOUYIN, ErrorKind::DataMalformed, what);
        let key = STANDARD
            .decode(secret.ok_or_else(|| malformed("no session_key"))?.expose())
            .map_err(|_| malformed("session_key is not base64"))?;
        let iv = STANDARD
            .decode(sealed.iv.ok_or_else(|| malformed("no iv"))?)
            .map_err(|_| malformed("iv is not base64"))?;
        let data = unseal(DOUYIN, &key, &iv, sealed.data)?;
        let stamped = data
            .get("watermark")
            .and_then(|w| w.get("appid"))
            .and_then(Value::as_str);
        if stamped != Some(expect.appid) {
            return Err(ProviderError::new(
                DOUYIN,
                ErrorKind::DataInvalid,
                "the data does not open",
            ));
        }
        Ok(data)
    }

    fn verify(&self, _appid: &str, signed: &Signed<'_>, secret: Option<&SessionSecret>) -> bool {
        secret.is_some_and(|key| {
            hmac_hex(key.expose().as_bytes(), signed.content) == signed.signature
        })
    }

    fn profile(&self, opened: &OpenedData) -> Profile {
        profile(opened, "avatarUrl")
    }

    fn phone_in(&self, opened: &OpenedData) -> Result<PhoneNumber, ProviderError> {
        let country_code = text(opened, "countryCode").unwrap_or_default();
        phone(DOUYIN, opened, "purePhoneNumber", country_code)
    }

    async fn phone_number(&self, _: &str, _: &str, _: &str) -> Result<PhoneNumber, ProviderError> {
        Err(unsupported(DOUYIN, "Douyin seals the phone number"))
    }

    async fn session_secret_valid(
        &self,
        _: &str,
        _: &str,
        _: &SessionSecret,
    ) -> Result<bool, ProviderError> {
        Ok(true)
    }
}

/// The session_key the Douyin double hands out for `code`.
fn douyin_key(code: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    for (slot, byte) in key.iter_mut().zip(code.bytes().cycle()) {
        *slot = byte;
    }
    key
}

// ---- the core, as auth runs it --------------------------------------------

fn core(provider: Arc<dyn LoginProvider>) -> (Arc<Logins>, Stores) {
    let clock = Clock::following_tokio();
    let stores = memory::stores(SessionPolicy::default(), clock.clone());
    let apps = Apps::new([(APPID.to_owned(), SecretString::from("unused"))]).unwrap();
    let limiter = Limiter::new(stores.budgets.clone(), Budgets::default(), clock.clone());
    let logins = Logins::new(
        apps,
        provider,
        stores.clone(),
        limiter,
        clock,
        Duration::from_secs(5),
    );
    (Arc::new(logins), stores)
}

fn expect(subject: &str) -> Expectations<'_> {
    Expectations {
        appid: APPID,
        subject: Some(subject),
        max_age: None,
        now_unix: 1_700_000_000,
    }
}

fn alipay(tamper: bool, app_key: &[u8]) -> Alipay {
    let platform = AlipayPlatform {
        app_keys: [(APPID.to_owned(), b"app key".to_vec())].into(),
        platform_key: b"platform key".to_vec(),
        users: [("auth-code-1".to_owned(), "2088000000000001".to_owned())].into(),
        tamper,
    };
    Alipay {
        platform: Arc::new(AlipayPlatformHandle(platform)),
        app_key: app_key.to_vec(),
        platform_key: b"platform key".to_vec(),
        content_key: *b"per-app content!",
    }
}

#[tokio::test]
async fn an_alipay_shaped_provider_logs_in_without_a_session_secret() {
    let provider = Arc::new(alipay(false, b"app key"));
    let (logins, stores) = core(provider.clone());

    let outcome = logins
        .login(
            APPID,
            LoginCode::code("auth-code-1"),
            None,
            SessionClient::default(),
        )
        .await
        .unwrap();

    assert_eq!(outcome.record.openid, "2088000000000001");
    assert_eq!(outcome.record.unionid, None);
    let kept = stores
        .sessions
        .session_key(APPID, "2088000000000001")
        .await
        .unwrap();
    assert!(
        kept.is_some_and(|secret| secret.is_empty()),
        "the empty secret"
    );
    let live = stores
        .sessions
        .touch(&outcome.token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.record.openid, "2088000000000001");

    // Sealed data opens with the per-app content key, through the trait.
    let sealed = seal(
        b"per-app content!",
        &[0; 16],
        &json!({"code": "10000", "mobile": "13800138000"}),
    );
    let provider: Arc<dyn LoginProvider> = provider;
    let opened = provider
        .open(
            &Sealed {
                data: &sealed,
                iv: None,
            },
            None,
            &expect("2088000000000001"),
        )
        .unwrap();
    let phone = provider.phone_in(&opened).unwrap();
    assert_eq!(phone.pure_phone_number, "13800138000");
    let tampered = seal(b"another app key!", &[0; 16], &json!({"mobile": "1"}));
    let refused = provider.open(
        &Sealed {
            data: &tampered,
            iv: None,
        },
        None,
        &expect("x"),
    );
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(ErrorKind::DataInvalid)
    );

    // Its responses are signed, and checked through the same trait.
    let content = r#"{"code":"10000","mobile":"13800138000"}"#;
    let signature = hmac_hex(b"platform key", content);
    assert!(provider.verify(
        APPID,
        &Signed {
            content,
            signature: &signature
        },
        None
    ));
    assert!(!provider.verify(
        APPID,
        &Signed {
            content: "{}",
            signature: &signature
        },
        None
    ));
}

/// How auth's login of `code` fails with `provider`.
async fn refused(provider: Alipay, code: &str) -> Arc<AuthError> {
    let (logins, _) = core(Arc::new(provider));
    let outcome = logins
        .login(APPID, LoginCode::code(code), None, SessionClient::default())
        .await;
    outcome.err().unwrap()
}

#[tokio::test]
async fn an_alipay_shaped_provider_refuses_what_is_not_signed_right() {
    // A refused code is the provider's verdict, as WeChat's 40029 is.
    let error = refused(alipay(false, b"app key"), "unknown-code").await;
    assert!(matches!(&*error, AuthError::Provider(e) if e.kind() == ErrorKind::CodeRefused));

    // Our request signed with the wrong key: our configuration is wrong.
    let error = refused(alipay(false, b"wrong key"), "auth-code-1").await;
    assert!(
        matches!(&*error, AuthError::Provider(e) if e.kind() == ErrorKind::CredentialsRefused && e.code() == Some(40006))
    );

    // An answer whose signature does not verify is no answer.
    let error = refused(alipay(true, b"app key"), "auth-code-1").await;
    assert!(matches!(&*error, AuthError::Provider(e) if e.kind() == ErrorKind::Failed));
    assert_eq!(
        tonic::Status::from(&*error).code(),
        tonic::Code::Unavailable,
        "answered as an unavailable provider"
    );
}

#[tokio::test]
async fn a_douyin_shaped_provider_gives_two_subjects_and_the_session_the_first() {
    let provider: Arc<dyn LoginProvider> = Arc::new(Douyin);
    let login = LoginCode {
        code: "douyin-code-1".to_owned(),
        anonymous_code: Some("anon-code-1".to_owned()),
    };

    let exchanged = provider.exchange(APPID, &login).await.unwrap();
    let subjects: Vec<_> = exchanged
        .subjects()
        .map(|s| (s.kind, s.id.as_str()))
        .collect();
    assert_eq!(
        subjects,
        [
            (SubjectKind::OpenId, "open-douyin-code-1"),
            (SubjectKind::AnonymousOpenId, "anon-anon-code-1"),
        ]
    );

    let (logins, stores) = core(provider.clone());
    let outcome = logins
        .login(APPID, login, None, SessionClient::default())
        .await
        .unwrap();
    assert_eq!(outcome.record.openid, "open-douyin-code-1");
    assert_eq!(
        outcome.record.unionid.as_deref(),
        Some("union-douyin-code-1")
    );

    // The session's secret, as the user service gets it from auth, opens
    // the user's data through the trait.
    let secret = stores
        .sessions
        .session_key(APPID, "open-douyin-code-1")
        .await
        .unwrap()
        .unwrap();
    let iv = *b"0123456789abcdef";
    let sealed = seal(
        &douyin_key("douyin-code-1"),
        &iv,
        &json!({"nickName": "抖音用户", "watermark": {"appid": APPID}}),
    );
    let iv = STANDARD.encode(iv);
    let sealed = Sealed {
        data: &sealed,
        iv: Some(&iv),
    };
    let opened = provider
        .open(&sealed, Some(&secret), &expect("open-douyin-code-1"))
        .unwrap();
    assert_eq!(
        provider.profile(&opened).nickname.as_deref(),
        Some("抖音用户")
    );
    let other_app = Expectations {
        appid: "tt-other",
        ..expect("open-douyin-code-1")
    };
    let refused = provider.open(&sealed, Some(&secret), &other_app);
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(ErrorKind::DataInvalid)
    );

    let signature = hmac_hex(secret.expose().as_bytes(), "raw");
    assert!(provider.verify(
        APPID,
        &Signed {
            content: "raw",
            signature: &signature
        },
        Some(&secret)
    ));
}
