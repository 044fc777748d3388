//! Access tokens: each app's current stable and classic token, the
//! replaced ones living out their grace, expiry, and invalidation.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::sweep::Sweep;

/// one kind never retires a token of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// `POST /cgi-bin/stable_token`.
    Stable,
    /// `GET /cgi-bin/token`.
    Classic,
}

struct AccessToken {
    appid: String,
    /// `None`: the TTL is too large to represent, it never expires.
    expires_at: Option<Instant>,
    /// A newer token of the same kind replaced it: it lives out its grace,
    /// then is "not latest" (40001) rather than expired (42001).
    superseded: bool,
}

impl AccessToken {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// The current token of each kind, per app.
#[derive(Default)]
struct AppTokens {
    stable: Option<String>,
    classic: Option<String>,
}

impl AppTokens {
    fn current(&mut self, kind: TokenKind) -> &mut Option<String> {
        match kind {
            TokenKind::Stable => &mut self.stable,
            TokenKind::Classic => &mut self.classic,
        }
    }
}

/// How long tokens live.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenLifetimes {
    /// From issue to expiry.
    pub ttl: Duration,
    /// How long a replaced token stays valid.
    pub grace: Duration,
}

/// An access_token as handed out, with its remaining lifetime in whole
/// seconds (rounded up, so a live token never claims 0).
#[derive(Debug)]
pub(crate) struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
}

/// Why an access_token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRefusal {
    /// Never issued, invalidated, or replaced and past its grace: 40001.
    Invalid,
    /// Lived out its TTL: 42001.
    Expired,
}

/// Every token of every app, and each app's current ones.
pub(crate) struct Tokens {
    /// token → what it is; every token of every app.
    tokens: HashMap<String, AccessToken>,
    /// appid → its current tokens.
    by_app: HashMap<String, AppTokens>,
    /// When dead tokens are swept.
    sweep: Sweep,
}

impl Tokens {
    pub(crate) fn new() -> Self {
        Tokens {
            tokens: HashMap::new(),
            by_app: HashMap::new(),
            sweep: Sweep::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// A token of `kind` for `appid`. A stable token is handed out again
    /// while it is live unless `force_refresh`; a classic one is new on
    /// every call. A new token retires the app's previous one of its kind,
    /// which stays valid for `lifetimes.grace` more.
    pub(crate) fn issue(
        &mut self,
        appid: &str,
        kind: TokenKind,
        force_refresh: bool,
        lifetimes: TokenLifetimes,
        new_token: impl FnOnce() -> String,
        now: Instant,
    ) -> IssuedToken {
        let app = self.by_app.entry(appid.to_owned()).or_default();
        let current = app.current(kind);
        if kind == TokenKind::Stable
            && !force_refresh
            && let Some(token) = current.as_ref()
            && let Some(entry) = self.tokens.get(token)
            && entry.is_live(now)
        {
            return IssuedToken {
                access_token: token.clone(),
                expires_in: remaining_secs(entry.expires_at, lifetimes.ttl, now),
            };
        }

        let token = new_token();
        if let Some(previous) = current.replace(token.clone())
            && let Some(entry) = self.tokens.get_mut(&previous)
        {
            entry.superseded = true;
            if let Some(end_of_grace) = now.checked_add(lifetimes.grace) {
                entry.expires_at = Some(
                    entry
                        .expires_at
                        .map_or(end_of_grace, |expires_at| expires_at.min(end_of_grace)),
                );
            }
        }
        if self.sweep.due(self.tokens.len()) {
            // A token that is neither live nor an app's current one answers
            // 40001 whether it is kept or not.
            self.tokens
                .retain(|_, entry| entry.is_live(now) || !entry.superseded);
            self.sweep.swept(self.tokens.len());
        }
        let expires_at = now.checked_add(lifetimes.ttl);
        self.tokens.insert(
            token.clone(),
            AccessToken {
                appid: appid.to_owned(),
                expires_at,
                superseded: false,
            },
        );
        IssuedToken {
            access_token: token,
            expires_in: remaining_secs(expires_at, lifetimes.ttl, now),
        }
    }

    /// The appid `token` was issued to, if it is still valid.
    pub(crate) fn check(&self, token: &str, now: Instant) -> Result<String, TokenRefusal> {
        match self.tokens.get(token) {
            Some(entry) if entry.is_live(now) => Ok(entry.appid.clone()),
            Some(entry) if !entry.superseded => Err(TokenRefusal::Expired),
            _ => Err(TokenRefusal::Invalid),
        }
    }

    /// Makes every token of `appid` invalid at once; answers how many were
    /// live.
    pub(crate) fn invalidate(&mut self, appid: &str, now: Instant) -> usize {
        let mut live = 0;
        self.tokens.retain(|_, entry| {
            let keep = entry.appid != appid;
            if !keep && entry.is_live(now) {
                live += 1;
            }
            keep
        });
        self.by_app.remove(appid);
        live
    }
}

/// Whole seconds until `expires_at`, rounded up; `ttl` for a token that
/// never expires.
fn remaining_secs(expires_at: Option<Instant>, ttl: Duration, now: Instant) -> u64 {
    let remaining = expires_at.map_or(ttl, |expires_at| expires_at.saturating_duration_since(now));
    remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0)
}
