//! The `wxlogin` binary's system: its defaults (SQLite, sessions in memory,
//! the key file, the WeChat simulator without credentials) over the
//! builder's wiring, its banner, and its run until stopped.

use std::collections::HashMap;

use wxlogin_common::config::{Env, Source, optional};
use wxlogin_userdata::sealing::{INDEX_KEY_VAR, KEYS_VAR};

use crate::{
    builder::{Services, SystemBuilder},
    error::Error,
    local_keys,
    service::Service,
};

/// Where the embedded database lives when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://wxlogin.sqlite3";

/// The environment, over the single-process defaults.
struct Layered<'a> {
    env: &'a (dyn Source + Sync),
    defaults: HashMap<&'static str, String>,
}

impl Source for Layered<'_> {
    fn get(&self, name: &str) -> Option<String> {
        optional(self.env, name).or_else(|| self.defaults.get(name).cloned())
    }
}

/// Where everything listens once started.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub gateway: std::net::SocketAddr,
    pub auth: std::net::SocketAddr,
    pub user: std::net::SocketAddr,
    /// The simulator, when WeChat is simulated.
    pub simulator: Option<std::net::SocketAddr>,
    pub database: String,
    pub sessions: String,
    /// Where the data keys come from (never the keys).
    pub keys: String,
}

/// The system, built and listening.
pub struct System {
    pub addresses: Addresses,
    simulator: Option<wxlogin_wechat_sim::RunningSimulator>,
    services: Services,
}

impl System {
    /// Builds everything from the process environment.
    pub async fn build() -> Result<System, Error> {
        System::build_from(&Env).await
    }

    pub async fn build_from(env: &(dyn Source + Sync)) -> Result<System, Error> {
        let mut defaults = HashMap::from([
            ("DATABASE_URL", DEFAULT_DATABASE_URL.to_owned()),
            ("REDIS_URL", wxlogin_auth::store::MEMORY_URL.to_owned()),
        ]);
        let url = optional(env, "DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let keys = match local_keys::local_keys(env, &url)? {
            Some(local) => {
                for (name, value) in local.values {
                    defaults.insert(name, value);
                }
                local.described
            }
            None => format!("{KEYS_VAR} and {INDEX_KEY_VAR} (configured)"),
        };
        let simulator = if optional(env, "WECHAT_SECRET").is_none()
            && optional(env, "WECHAT_APPS").is_none()
        {
            let appid = optional(env, "WECHAT_APPID")
                .unwrap_or_else(|| wxlogin_wechat_sim::DEFAULT_APPID.to_owned());
            let secret = wxlogin_wechat_sim::DEFAULT_SECRET.to_owned();
            let addr = wxlogin_common::config::parsed(
                env,
                wxlogin_wechat_sim::ADDR_VAR,
                wxlogin_wechat_sim::DEFAULT_ADDR,
            )?;
            let config = wxlogin_wechat_sim::SimConfig {
                apps: vec![(appid.clone(), secret.clone())],
                ..wxlogin_wechat_sim::SimConfig::default()
            };
            let running = wxlogin_wechat_sim::Simulator::new(config)
                .spawn(addr)
                .await?;
            tracing::warn!(
                simulator = %running.base_url(),
                %appid,
                "no WECHAT_SECRET configured: WeChat is SIMULATED; set WECHAT_APPID and WECHAT_SECRET for real logins"
            );
            defaults.insert("WECHAT_APPID", appid);
            defaults.insert("WECHAT_SECRET", secret);
            defaults.insert("WECHAT_API_BASE", running.base_url());
            Some(running)
        } else {
            None
        };
        let source = Layered { env, defaults };
        // As auth and the user service read them (both always set here).
        let sessions = redact_url(&optional(&source, "REDIS_URL").unwrap_or_default());
        let (database, _) = wxlogin_user::Config::database(&source)?;
        let database = redact_url(wxlogin_common::ExposeSecret::expose_secret(&database));

        // The internal services on loopback ports of their own, with fresh
        // credentials each start, unless configured.
        let services = SystemBuilder::new()?.over(&source).start().await?;
        Ok(System {
            addresses: Addresses {
                gateway: services.addr(Service::Gateway, 0)?,
                auth: services.addr(Service::Auth, 0)?,
                user: services.addr(Service::User, 0)?,
                simulator: simulator.as_ref().map(|running| running.addr),
                database,
                sessions,
                keys,
            },
            simulator,
            services,
        })
    }

    /// Serves until `shutdown` completes or a part stops; then stops the
    /// rest, the gateway first (see [`Services::stop_all`]).
    pub async fn run_until_stopped(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let failure = tokio::select! {
            () = shutdown => None,
            failure = self.services.stopped_by_itself() => Some(failure),
        };
        // How the others end is not the system's outcome: only a part that
        // stopped by itself is.
        drop(self.services.stop_all().await);
        if let Some(simulator) = self.simulator {
            drop(simulator.shutdown().await);
        }
        match failure {
            None => Ok(()),
            Some(failure) => Err(Error::Stopped(failure)),
        }
    }
}

/// A URL without its password, for the start-up banner.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// What `wxlogin` prints once it listens: where, and how to try it.
pub fn banner(addresses: &Addresses) -> String {
    let gateway = addresses.gateway;
    let mut text = format!(
        "\nwxlogin is running\n  gateway   http://{gateway}\n  auth      grpc://{} (loopback)\n  user      grpc://{} (loopback)\n  users     {}\n  sessions  {}\n  keys      {}\n",
        addresses.auth, addresses.user, addresses.database, addresses.sessions, addresses.keys
    );
    match addresses.simulator {
        Some(sim) => {
            text.push_str(&format!(
                "  WeChat    SIMULATED at http://{sim} (set WECHAT_APPID and WECHAT_SECRET for the real one)\n\n\
                 Try it:\n\
                 \x20 code=$(curl -s -X POST http://{sim}/sim/codes -d '{{}}' | sed 's/.*\"code\":\"\\([^\"]*\\)\".*/\\1/')\n\
                 \x20 token=$(curl -s http://{gateway}/v1/login -H 'content-type: application/json' -d \"{{\\\"code\\\":\\\"$code\\\"}}\" | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')\n\
                 \x20 curl -s http://{gateway}/v1/me -H \"authorization: Bearer $token\"\n"
            ));
        }
        None => text.push_str("  WeChat    the real API (WECHAT_API_BASE)\n"),
    }
    text.push_str("\nCtrl-C stops everything.\n");
    text
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_stay_out_of_the_banner() {
        assert_eq!(
            redact_url("mysql://app:hunter2@db:3306/x"),
            "mysql://app:***@db:3306/x"
        );
        assert_eq!(redact_url("redis://:pw@r:6379"), "redis://:***@r:6379");
        assert_eq!(
            redact_url("sqlite://wxlogin.sqlite3"),
            "sqlite://wxlogin.sqlite3"
        );
        assert_eq!(redact_url("memory://"), "memory://");
    }
}
