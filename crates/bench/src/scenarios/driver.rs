//! The running system as the scenarios see it: the gateway under test and
//! the simulator's control API ([`Driver`]), one request's outcome
//! ([`send`]), registered users, and what a scenario runs with.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde::Deserialize;
use serde_json::json;
use wxlogin_common::error_report as error_chain;

use crate::{Runner, cli::RunArgs, load::Outcome};

/// Talks to the running system: the gateway under test and the simulator's
/// control API.
#[derive(Debug, Clone)]
pub struct Driver {
    pub client: reqwest::Client,
    pub gateway: String,
    pub sim: String,
    pub concurrency: usize,
}

/// One HTTP request and its whole answer. A 4xx or 5xx is an error bucketed
/// by its status; a failure to connect, send or read is `transport`.
pub async fn send(request: reqwest::RequestBuilder) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Outcome::failed("transport", error_chain(&error)),
    };
    let status = response.status();
    match response.bytes().await {
        Ok(body) if status.as_u16() >= 400 => Outcome::failed(
            status.as_str(),
            String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        ),
        Ok(_) => Outcome::Ok,
        Err(error) => Outcome::failed("transport", error_chain(&error)),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Minted {
    pub code: String,
    pub openid: String,
}

#[derive(Debug, Deserialize)]
struct LoginAnswer {
    token: String,
}

/// A registered user with a live session.
#[derive(Debug, Clone)]
pub struct User {
    pub openid: String,
    pub token: String,
}

impl Driver {
    /// Sets the latency the simulator adds to every WeChat call.
    pub(super) async fn set_latency(&self, latency: Duration) -> anyhow::Result<()> {
        self.client
            .put(format!("{}/sim/latency", self.sim))
            .json(&json!({ "ms": latency.as_millis() }))
            .send()
            .await?
            .error_for_status()
            .context("setting the simulator's latency")?;
        Ok(())
    }

    /// Mints one code per entry: for that openid, or for a new user.
    pub(super) async fn mint(&self, openids: Vec<Option<String>>) -> anyhow::Result<Vec<Minted>> {
        let url = format!("{}/sim/codes", self.sim);
        stream::iter(openids)
            .map(|openid| {
                let body = openid.map_or_else(|| json!({}), |openid| json!({ "openid": openid }));
                let request = self.client.post(&url).json(&body);
                async move {
                    let minted: Minted = request.send().await?.error_for_status()?.json().await?;
                    anyhow::Ok(minted)
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await
            .context("minting codes at the simulator")
    }

    /// Registers `count` new users, each logged in once.
    pub async fn register(&self, count: usize) -> anyhow::Result<Vec<User>> {
        let minted = self.mint(vec![None; count]).await?;
        let url = format!("{}/v1/login", self.gateway);
        stream::iter(minted)
            .map(|minted| {
                let request = self.client.post(&url).json(&json!({ "code": minted.code }));
                async move {
                    let response = request.send().await?;
                    let status = response.status();
                    if !status.is_success() {
                        let body = response.text().await.unwrap_or_default();
                        anyhow::bail!("login answered {status}: {body}");
                    }
                    let answer: LoginAnswer = response.json().await?;
                    Ok(User {
                        openid: minted.openid,
                        token: answer.token,
                    })
                }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await
            .context("registering users through the gateway")
    }

    /// `data` sealed with the user's current session_key, as the body of
    /// `POST /v1/me/profile`.
    pub(super) async fn seal(
        &self,
        openid: &str,
        data: serde_json::Value,
    ) -> anyhow::Result<String> {
        let sealed: serde_json::Value = self
            .client
            .post(format!("{}/sim/seal", self.sim))
            .json(&json!({ "openid": openid, "data": data }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(json!({ "encryptedData": sealed["encryptedData"], "iv": sealed["iv"] }).to_string())
    }
}

/// What running a scenario needs.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub driver: &'a Driver,
    pub runner: &'a Runner,
    pub args: &'a RunArgs,
}

/// What scenarios share, prepared on first use.
#[derive(Default)]
pub struct Prepared {
    registered: Option<Arc<Vec<User>>>,
}

impl Prepared {
    pub(super) async fn registered(
        &mut self,
        driver: &Driver,
        count: usize,
    ) -> anyhow::Result<Arc<Vec<User>>> {
        if let Some(users) = &self.registered {
            return Ok(users.clone());
        }
        eprintln!("  registering {count} users");
        let users = Arc::new(driver.register(count).await?);
        self.registered = Some(users.clone());
        Ok(users)
    }
}
