//! Whether a dependency (MySQL, Redis) is known to be down: the one circuit
//! breaker state of every service. While it is down, requests that need the
//! dependency fail at once (a 503 for the client) instead of waiting out
//! connection timeouts, and the health service reports NOT_SERVING.
//!
//! The breaker only holds the state and says when it changes, once each way
//! (an outage costs two log lines, not one per request). Who decides is the
//! dependency's own code: its probe, or a failed command. A failure that
//! may be one dead connection rather than an outage can [`Breaker::suspect`]
//! instead, which wakes the probe without changing the state.

use std::{
    fmt::Display,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, watch};

/// What a breaker logs when its state changes.
#[derive(Debug, Clone, Copy)]
pub struct Messages {
    /// At WARN, with the cause as `error`, when the dependency goes down.
    pub down: &'static str,
    /// At INFO, when it answers again.
    pub up: &'static str,
    /// A gauge set to 1 while up and 0 while down, if any.
    pub gauge: Option<&'static str>,
}

/// Up or down, shared by everything that uses one dependency. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Breaker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    messages: Messages,
    /// `true` while the dependency answers.
    up: watch::Sender<bool>,
    /// Wakes the probe.
    suspected: Notify,
    /// When the dependency was last seen down, in microseconds after
    /// `epoch` plus one (0: never).
    last_seen_down: AtomicU64,
    epoch: Instant,
}

impl Breaker {
    /// Up, until something says otherwise.
    pub fn new(messages: Messages) -> Breaker {
        Breaker {
            inner: Arc::new(Inner {
                messages,
                up: watch::Sender::new(true),
                suspected: Notify::new(),
                last_seen_down: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    pub fn is_up(&self) -> bool {
        *self.inner.up.borrow()
    }

    /// Follows the state (`true`: up), for health reporting and for work to
    /// do once the dependency is back.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.inner.up.subscribe()
    }

    /// The dependency failed to answer: true when it was up until now (the
    /// transition is logged).
    pub fn mark_down(&self, why: &dyn Display) -> bool {
        self.seen_down();
        let tripped = self.inner.up.send_replace(false);
        if tripped {
            tracing::warn!(error = %why, "{}", self.inner.messages.down);
            if let Some(gauge) = self.inner.messages.gauge {
                metrics::gauge!(gauge).set(0.0);
            }
        }
        tripped
    }

    /// Down from the start, silently: nothing has answered yet (a lazily
    /// connected dependency whose probe has not run).
    pub fn start_down(&self) {
        self.inner.up.send_replace(false);
    }

    /// The dependency answered: true when it was down until now (the
    /// transition is logged).
    pub fn mark_up(&self) -> bool {
        let recovered = !self.inner.up.send_replace(true);
        if recovered {
            tracing::info!("{}", self.inner.messages.up);
            if let Some(gauge) = self.inner.messages.gauge {
                metrics::gauge!(gauge).set(1.0);
            }
        }
        recovered
    }

    /// A failure that may be one dead connection: the probe looks at once,
    /// and connections idle since now are suspect
    /// ([`Breaker::idle_across_an_outage`]).
    pub fn suspect(&self) {
        self.seen_down();
        self.inner.suspected.notify_one();
    }

    /// Until [`Breaker::suspect`] is called (or was, since the last wait).
    pub async fn suspected(&self) {
        self.inner.suspected.notified().await;
    }

    fn seen_down(&self) {
        let since_epoch = u64::try_from(self.inner.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.inner
            .last_seen_down
            .store(since_epoch.saturating_add(1), Ordering::Relaxed);
    }

    /// Whether a connection idle for `idle_for` has been idle since before
    /// the dependency was last seen down, or since just after
    /// ([`SEEN_DOWN_GRACE`]): it may have been cut, and is worth a ping
    /// before it carries a request.
    pub fn idle_across_an_outage(&self, idle_for: Duration) -> bool {
        match self.inner.last_seen_down.load(Ordering::Relaxed) {
            0 => false,
            seen_plus_one => {
                let seen = Duration::from_micros(seen_plus_one - 1);
                let since_seen = self.inner.epoch.elapsed().saturating_sub(seen);
                idle_since_about(since_seen, idle_for)
            }
        }
    }
}

/// How long after the dependency was seen down a connection that went idle
/// is still suspect. Seeing it down lags the outage, and a connection can
/// pass its check on release in the instant before the server (or the
/// network) drops it: seen in a test that cuts MySQL while a connection goes
/// back to the pool, where the connection went idle 1 ms before the probe
/// saw the outage and failed the next request it carried.
pub const SEEN_DOWN_GRACE: Duration = Duration::from_millis(100);

/// Whether a connection idle for `idle_for` went idle before, or within
/// [`SEEN_DOWN_GRACE`] after, the moment `since_seen` ago.
fn idle_since_about(since_seen: Duration, idle_for: Duration) -> bool {
    since_seen <= idle_for.saturating_add(SEEN_DOWN_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: Messages = Messages {
        down: "down",
        up: "up",
        gauge: None,
    };

    #[test]
    fn transitions_are_reported_once_each_way() {
        let breaker = Breaker::new(MESSAGES);
        assert!(breaker.is_up());
        assert!(breaker.mark_down(&"first"));
        assert!(!breaker.mark_down(&"again"));
        assert!(!breaker.is_up());
        assert!(breaker.mark_up());
        assert!(!breaker.mark_up());
    }

    #[test]
    fn connections_idle_since_before_an_outage_are_suspect() {
        let breaker = Breaker::new(MESSAGES);
        assert!(!breaker.idle_across_an_outage(Duration::from_secs(3600)));
        breaker.mark_down(&"test");
        breaker.mark_up();
        assert!(breaker.idle_across_an_outage(Duration::from_secs(3600)));
        // Gone idle just after the outage was seen: still suspect.
        assert!(breaker.idle_across_an_outage(Duration::ZERO));
    }

    #[test]
    fn a_connection_gone_idle_well_after_the_outage_was_seen_is_not_suspect() {
        let ms = Duration::from_millis;
        // Idle since 1 ms before it was seen down, or since 1 ms after.
        assert!(idle_since_about(ms(300), ms(301)));
        assert!(idle_since_about(ms(300), ms(299)));
        assert!(idle_since_about(ms(300), ms(300) - SEEN_DOWN_GRACE));
        assert!(!idle_since_about(ms(300), ms(299) - SEEN_DOWN_GRACE));
        assert!(!idle_since_about(ms(3_000), ms(10)));
    }

    #[tokio::test]
    async fn a_suspicion_wakes_the_probe_without_changing_the_state() {
        let breaker = Breaker::new(MESSAGES);
        breaker.suspect();
        assert!(breaker.is_up());
        let woken = tokio::time::timeout(Duration::from_secs(1), breaker.suspected()).await;
        assert!(woken.is_ok());
    }
}
