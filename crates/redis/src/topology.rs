//! Where Redis is: the three forms of `REDIS_URL` (one Redis, a Redis
//! Cluster, a Sentinel-managed primary), parsed once.

use redis::{
    ErrorKind, IntoConnectionInfo, RedisError, RedisResult, sentinel::SentinelNodeConnectionInfo,
};

/// The `REDIS_URL` scheme of a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster";
/// The `REDIS_URL` scheme of a Sentinel-managed primary.
pub const SENTINEL_SCHEME: &str = "redis+sentinel";

/// Where Redis is, as `REDIS_URL` says.
#[derive(Clone)]
pub enum Topology {
    /// One server: `redis://`, `redis+unix://` or `unix://`.
    Single(String),
    /// A Redis Cluster: `redis://` URLs of the nodes to discover it from.
    Cluster(Vec<String>),
    /// The primary the sentinels know as `service`.
    Sentinel {
        sentinels: Vec<String>,
        service: String,
        /// Credentials and database of the primary.
        primary: SentinelNodeConnectionInfo,
    },
}

impl std::fmt::Debug for Topology {
    // URLs may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Topology::Single(_) => "Topology::Single",
            Topology::Cluster(_) => "Topology::Cluster",
            Topology::Sentinel { .. } => "Topology::Sentinel",
        })
    }
}

impl Topology {
    /// Reads a `REDIS_URL`. Under `redis+cluster://` and `redis+sentinel://`
    /// the authority is a comma-separated list of `host:port`, after
    /// optional `user:password@` (the data servers' credentials; the
    /// sentinels are asked without). A cluster has no database number; a
    /// Sentinel URL's path is the service name, then optionally the
    /// database.
    pub fn parse(url: &str) -> RedisResult<Topology> {
        let invalid = |what: &'static str| RedisError::from((ErrorKind::InvalidClientConfig, what));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(Topology::Single(url.to_owned()));
        };
        if scheme != CLUSTER_SCHEME && scheme != SENTINEL_SCHEME {
            url.into_connection_info()?;
            return Ok(Topology::Single(url.to_owned()));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), authority),
        };
        let hosts: Vec<&str> = hosts.split(',').filter(|host| !host.is_empty()).collect();
        if hosts.is_empty() {
            return Err(invalid(
                "a Redis Cluster or Sentinel URL names no host:port",
            ));
        }
        if scheme == CLUSTER_SCHEME {
            if !path.is_empty() && path != "0" {
                return Err(invalid("a Redis Cluster has only database 0"));
            }
            let nodes: Vec<String> = hosts
                .iter()
                .map(|host| format!("redis://{credentials}{host}/"))
                .collect();
            for node in &nodes {
                node.as_str().into_connection_info()?;
            }
            return Ok(Topology::Cluster(nodes));
        }
        let (service, db) = path.split_once('/').unwrap_or((path, ""));
        if service.is_empty() {
            return Err(invalid(
                "a Redis Sentinel URL names no service: redis+sentinel://host:port,…/<service>",
            ));
        }
        let sentinels: Vec<String> = hosts
            .iter()
            .map(|host| format!("redis://{host}/"))
            .collect();
        for sentinel in &sentinels {
            sentinel.as_str().into_connection_info()?;
        }
        // The primary's credentials and database, read as redis-rs reads a
        // URL.
        let primary = format!("redis://{credentials}{}/{db}", hosts[0]).into_connection_info()?;
        Ok(Topology::Sentinel {
            sentinels,
            service: service.to_owned(),
            primary: SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(primary.redis_settings().clone()),
        })
    }

    /// Whether keys are spread over the hash slots of a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }
}
