//! The three services the builder starts, and what the wiring knows of
//! each: its binary, where it is told to listen, how its callers find it.

/// One of the services the builder starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Auth,
    User,
    Gateway,
}

impl Service {
    /// In the order they start: each after those it calls.
    pub const ALL: [Service; 3] = [Service::Auth, Service::User, Service::Gateway];

    /// `auth`, `user`, `gateway`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::User => "user",
            Service::Gateway => "gateway",
        }
    }

    /// Its binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Auth => "wxlogin-auth",
            Service::User => "wxlogin-user",
            Service::Gateway => "wxlogin-gateway",
        }
    }

    /// The variable that says where it listens.
    pub fn addr_var(self) -> &'static str {
        match self {
            Service::Auth => "AUTH_ADDR",
            Service::User => "USER_ADDR",
            Service::Gateway => "GATEWAY_ADDR",
        }
    }

    /// The variable that tells its callers where it is (`None` for the
    /// gateway, which nothing of ours calls).
    pub(crate) fn url_var(self) -> Option<&'static str> {
        match self {
            Service::Auth => Some("AUTH_URL"),
            Service::User => Some("USER_URL"),
            Service::Gateway => None,
        }
    }

    /// The services it calls.
    pub(crate) fn calls(self) -> &'static [Service] {
        match self {
            Service::Auth => &[],
            Service::User => &[Service::Auth],
            Service::Gateway => &[Service::Auth, Service::User],
        }
    }
}
