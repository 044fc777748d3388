//! Security-relevant events, as structured log events under one target,
//! [`TARGET`], at INFO: a log pipeline keeps them apart by target (and the
//! `event` field) and can route them to longer retention than the rest.
//!
//! Every event carries `event` (one of [`Event`]'s names) and, where the
//! process knows them, `user_id`, `appid`, `session_id` (a session's public
//! id, never its token) and `request_id`. No event carries a token, a
//! session_key, a code, a phone number or profile data.

/// The log target of every audit event.
pub const TARGET: &str = "wxlogin::audit";

/// The kinds of audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A login opened a session (`created`: it registered the user).
    Login,
    /// A session ended at its own request (`all`: every session of the user).
    Logout,
    /// One of the user's sessions was ended from another, or by the back
    /// office (`ended`: how many).
    SessionRevoked,
    /// The team blocked the user (`ended`: how many sessions ended).
    UserBlocked,
    /// The team lifted a block.
    UserUnblocked,
    /// A login was refused because the team blocked the user.
    BlockedLoginRefused,
    /// The user's account was deleted (`ended`: how many sessions ended;
    /// `completed_by`: `login` when a login finished a deletion cut short).
    AccountDeleted,
    /// Data sealed with a session_key that a newer login replaced.
    SessionKeyStale,
}

impl Event {
    /// The event's name, as the `event` field carries it.
    pub const fn name(self) -> &'static str {
        match self {
            Event::Login => "login",
            Event::Logout => "logout",
            Event::SessionRevoked => "session_revoked",
            Event::UserBlocked => "user_blocked",
            Event::UserUnblocked => "user_unblocked",
            Event::BlockedLoginRefused => "blocked_login_refused",
            Event::AccountDeleted => "account_deleted",
            Event::SessionKeyStale => "session_key_stale",
        }
    }
}

/// Logs an audit event: `audit!(Event::Login, user_id = 7, request_id = ?id)`;
/// the fields are `tracing`'s.
#[macro_export]
macro_rules! audit {
    ($event:expr) => {
        ::tracing::info!(
            target: $crate::audit::TARGET,
            event = $crate::audit::Event::name($event),
            "audit"
        )
    };
    ($event:expr, $($field:tt)+) => {
        ::tracing::info!(
            target: $crate::audit::TARGET,
            event = $crate::audit::Event::name($event),
            $($field)+,
            "audit"
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_distinct_snake_case() {
        let events = [
            Event::Login,
            Event::Logout,
            Event::SessionRevoked,
            Event::UserBlocked,
            Event::UserUnblocked,
            Event::BlockedLoginRefused,
            Event::AccountDeleted,
            Event::SessionKeyStale,
        ];
        let names: std::collections::HashSet<_> = events.iter().map(|e| e.name()).collect();
        assert_eq!(names.len(), events.len());
        assert!(
            names
                .iter()
                .all(|name| name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }
}
