//! The workloads the scenarios drive through the gateway: logins, `GET
//! /v1/me` (or `/v1/verify`), profile updates, and a mix of logins and
//! `/v1/me`. Each builds its requests; what they need is prepared
//! elsewhere.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context as _;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use super::{
    driver::{Driver, send},
    pool::CodePool,
};
use crate::load::{Cycle, Outcome, Workload};

/// The share of logins in the mixed workload: one request in ten.
pub(super) const MIXED_LOGIN_EVERY: u64 = 10;

/// `POST /v1/login`, each request with a code from the pool.
pub(super) struct Login {
    client: reqwest::Client,
    url: String,
    codes: Arc<CodePool>,
}

impl Login {
    pub(super) fn new(driver: &Driver, codes: Arc<CodePool>) -> Login {
        Login {
            client: driver.client.clone(),
            url: format!("{}/v1/login", driver.gateway),
            codes,
        }
    }

    fn request(&self, code: &str) -> reqwest::RequestBuilder {
        self.client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(format!(r#"{{"code":"{code}"}}"#))
    }
}

impl Workload for Login {
    type Input = String;

    fn kinds(&self) -> &[&'static str] {
        &["login"]
    }

    fn next(&self) -> Option<(usize, String)> {
        self.codes.take().map(|code| (0, code))
    }

    async fn call(&self, code: String) -> Outcome {
        send(self.request(&code)).await
    }
}

/// `GET /v1/me` (of the gateway, or of the HTTP floor), or `GET
/// /v1/verify`, cycling tokens.
pub struct Me {
    client: reqwest::Client,
    url: String,
    kinds: [&'static str; 1],
    bearers: Cycle<HeaderValue>,
}

impl Me {
    pub fn new(client: &reqwest::Client, base: &str, tokens: &[String]) -> anyhow::Result<Me> {
        Me::at(client, base, "me", "/v1/me", tokens)
    }

    /// Forward authentication's `GET /v1/verify`.
    pub fn verify(client: &reqwest::Client, base: &str, tokens: &[String]) -> anyhow::Result<Me> {
        Me::at(client, base, "verify", "/v1/verify", tokens)
    }

    fn at(
        client: &reqwest::Client,
        base: &str,
        kind: &'static str,
        path: &str,
        tokens: &[String],
    ) -> anyhow::Result<Me> {
        let bearers = tokens
            .iter()
            .map(|token| HeaderValue::from_str(&format!("Bearer {token}")))
            .collect::<Result<Vec<_>, _>>()
            .context("a token is not a valid header value")?;
        Ok(Me {
            client: client.clone(),
            url: format!("{base}{path}"),
            kinds: [kind],
            bearers: Cycle::new(bearers),
        })
    }

    fn request(&self, bearer: HeaderValue) -> reqwest::RequestBuilder {
        self.client.get(&self.url).header(AUTHORIZATION, bearer)
    }
}

impl Workload for Me {
    type Input = HeaderValue;

    fn kinds(&self) -> &[&'static str] {
        &self.kinds
    }

    fn next(&self) -> Option<(usize, HeaderValue)> {
        self.bearers.next().map(|bearer| (0, bearer.clone()))
    }

    async fn call(&self, bearer: HeaderValue) -> Outcome {
        send(self.request(bearer)).await
    }
}

/// `POST /v1/me/profile` with each user's sealed data.
pub(super) struct Profile {
    pub client: reqwest::Client,
    pub url: String,
    pub sealed: Cycle<(HeaderValue, String)>,
}

impl Workload for Profile {
    type Input = (HeaderValue, String);

    fn kinds(&self) -> &[&'static str] {
        &["profile"]
    }

    fn next(&self) -> Option<(usize, (HeaderValue, String))> {
        self.sealed.next().map(|item| (0, item.clone()))
    }

    async fn call(&self, (bearer, body): (HeaderValue, String)) -> Outcome {
        let request = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, bearer)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        send(request).await
    }
}

/// One login in [`MIXED_LOGIN_EVERY`] requests, `GET /v1/me` otherwise.
pub(super) struct Mixed {
    pub login: Login,
    pub me: Me,
    pub sent: AtomicU64,
}

pub(super) enum MixedInput {
    Login(String),
    Me(HeaderValue),
}

impl Workload for Mixed {
    type Input = MixedInput;

    fn kinds(&self) -> &[&'static str] {
        &["login", "me"]
    }

    fn next(&self) -> Option<(usize, MixedInput)> {
        if self
            .sent
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(MIXED_LOGIN_EVERY)
        {
            self.login
                .next()
                .map(|(_, code)| (0, MixedInput::Login(code)))
        } else {
            self.me
                .next()
                .map(|(_, bearer)| (1, MixedInput::Me(bearer)))
        }
    }

    async fn call(&self, input: MixedInput) -> Outcome {
        match input {
            MixedInput::Login(code) => send(self.login.request(&code)).await,
            MixedInput::Me(bearer) => send(self.me.request(bearer)).await,
        }
    }
}
