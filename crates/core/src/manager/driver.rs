//! The phase driver: one task per manager that moves the current
//! credential's phase flag at its deadlines, so that the hot path reads a
//! flag instead of the clock. Also: the runtime checks every spawn makes.
//!
//! Invariants:
//! - At most one driver task per manager (`running` is claimed by a
//!   compare-and-swap before the spawn), and it holds the manager only
//!   weakly: it ends when the manager is dropped (`Inner`'s drop wakes it).
//! - The driver watches only the current credential. A replaced credential
//!   is `Retired` by whoever replaced it, and nothing watches it any more:
//!   no task lives per credential.
//! - While a driver runs, every publication wakes it ([`Driver::poke`]);
//!   when it stops (its runtime shut down), it puts the current phase back
//!   to `Untimed`, so lookups read the clock and start a new driver.
//! - Nothing here panics without a runtime or a time driver: [`runtime`]
//!   says `NoRuntime` first.
//! - The sessions of a [`Sessions`](crate::Sessions) registry have no
//!   driver: their phase flag stays `Untimed` and every lookup reads the
//!   clock, so that no task lives per session.

use std::{
    pin::pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::future::select;
use tokio::{runtime::Handle, sync::Notify, time::Instant};

use super::{
    Inner,
    credential::{Credential, Phase, State, Status},
};
use crate::{Error, ErrorKind};

pub(super) struct Driver {
    running: AtomicBool,
    /// `None` for a registry's session, which never runs a driver.
    wake: Option<Arc<Notify>>,
    /// After a failed background refresh: the generation whose credential
    /// is served as fresh again, and until when.
    snooze: Mutex<Option<(u64, Instant)>>,
}

impl Driver {
    pub(super) fn new(timed: bool) -> Self {
        Driver {
            running: AtomicBool::new(false),
            wake: timed.then(|| Arc::new(Notify::new())),
            snooze: Mutex::new(None),
        }
    }

    /// Makes the driver look at the current state again (a permit is kept if
    /// it is busy, so no change is missed).
    pub(super) fn poke(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }

    fn snoozed_until(&self, generation: u64) -> Option<Instant> {
        let snooze = self.snooze.lock().unwrap_or_else(|p| p.into_inner());
        snooze
            .filter(|(g, _)| *g == generation)
            .map(|(_, until)| until)
    }
}

/// Whether the current context can run what a [`TokenManager`](crate::TokenManager) spawns and
/// times: a tokio runtime with its time driver.
///
/// Every method of the manager that needs one checks it and answers with
/// this error instead of panicking; call it at start-up to fail early.
///
/// # Errors
///
/// [`NoRuntime`](crate::ErrorKind::NoRuntime) outside a tokio runtime, or
/// in one built without `enable_time()` (or `enable_all()`). Without timers
/// the check makes tokio panic once, caught, which the panic hook reports.
///
/// # Example
///
/// ```
/// use tower_token_refresh_core::check_runtime;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// assert!(check_runtime().is_err(), "no runtime here");
/// let runtime = tokio::runtime::Builder::new_current_thread()
///     .enable_time()
///     .build()?;
/// runtime.block_on(async { assert!(check_runtime().is_ok()) });
/// # Ok(()) }
/// ```
pub fn check_runtime() -> Result<(), Error> {
    runtime().map(drop)
}

/// The current runtime, if it can run the coordinator's tasks (it must have
/// the time driver: every wait of a refresh is bounded by a timer).
pub(super) fn runtime() -> Result<Handle, Error> {
    let handle = Handle::try_current()
        .map_err(|_| Error::new(ErrorKind::NoRuntime, "no tokio runtime is running"))?;
    if !timers_enabled() {
        return Err(Error::new(
            ErrorKind::NoRuntime,
            "the tokio runtime has no time driver: build it with enable_time() or enable_all()",
        ));
    }
    Ok(handle)
}

/// Whether the current runtime has timers. tokio has no way to ask; making
/// a timer panics without them, so this makes one and catches the panic
/// (which the panic hook still reports once per call). With `panic =
/// "abort"` nothing can be caught, so timers are assumed.
fn timers_enabled() -> bool {
    #[cfg(panic = "unwind")]
    {
        std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_ok()
    }
    #[cfg(not(panic = "unwind"))]
    {
        true
    }
}

/// The phase of an untimed credential by the clock. Makes sure a driver
/// runs and, once one does, writes the phase into the flag on its behalf, so
/// that the next lookup takes the fast path even before the driver's task
/// is first polled (publication woke it: it watches this credential from
/// its next tick).
#[cold]
pub(super) fn arm(inner: &Arc<Inner>, cred: &Credential) -> Phase {
    let phase = cred.phase_at(Instant::now());
    if !inner.common.timed {
        // A registry's session: no driver of its own, the clock decides at
        // every lookup.
        return phase;
    }
    let running = &inner.driver.running;
    if !running.load(Ordering::SeqCst) {
        start(inner);
    }
    if running.load(Ordering::SeqCst)
        && cred
            .phase
            .compare_exchange(
                Phase::Untimed as u8,
                phase as u8,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        && !running.load(Ordering::SeqCst)
    {
        // The driver stopped meanwhile. Its stop either saw this write and
        // undid it, or happened before it and cannot: undo it here.
        let _ = cred.phase.compare_exchange(
            phase as u8,
            Phase::Untimed as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
    phase
}

fn start(inner: &Arc<Inner>) {
    let driver = &inner.driver;
    let Some(wake) = &driver.wake else {
        return;
    };
    if driver
        .running
        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    match runtime() {
        Ok(handle) => {
            // The guard is made before the spawn: a task dropped before its
            // first poll (its runtime shutting down) still hands back.
            let stop = Stop(Arc::downgrade(inner));
            handle.spawn(drive(stop, Arc::clone(wake)));
        }
        // No runtime that could time the phase: lookups keep reading the
        // clock, which is correct, only slower.
        Err(_) => driver.running.store(false, Ordering::SeqCst),
    }
}

async fn drive(stop: Stop, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = stop.0.upgrade() else {
                return;
            };
            inner.tick(Instant::now())
        };
        let notified = pin!(wake.notified());
        match next {
            Some(at) => {
                let sleep = pin!(tokio::time::sleep_until(at));
                let _ = select(sleep, notified).await;
            }
            None => notified.await,
        }
    }
}

/// Ends the driver's claim when its task ends or is dropped.
struct Stop(Weak<Inner>);

impl Drop for Stop {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        // SeqCst with `arm`: a lookup that writes the flag after this reset
        // sees `running` false and undoes its write.
        inner.driver.running.store(false, Ordering::SeqCst);
        if let Status::Ready(cred) = &inner.state.load().status {
            for phase in [Phase::Fresh, Phase::Ahead] {
                let _ = cred.phase.compare_exchange(
                    phase as u8,
                    Phase::Untimed as u8,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        }
    }
}

impl Inner {
    /// Brings the current credential's flag up to date; returns when it
    /// next changes.
    fn tick(&self, now: Instant) -> Option<Instant> {
        let state = self.state.load();
        let Status::Ready(cred) = &state.status else {
            return None;
        };
        let snooze = self
            .driver
            .snoozed_until(state.generation)
            .filter(|until| now < *until);
        let mut target = cred.phase_at(now);
        if target == Phase::Ahead && snooze.is_some() {
            target = Phase::Fresh;
        }
        let mut seen = cred.phase.load(Ordering::Acquire);
        // Retired is above every target, so it is never overwritten.
        while seen == Phase::Untimed as u8 || seen < target as u8 {
            match cred.phase.compare_exchange(
                seen,
                target as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => seen = actual,
            }
        }
        match (cred.phase(), snooze) {
            (Phase::Fresh, Some(until)) => Some(cred.stale_at.map_or(until, |s| s.min(until))),
            (phase, _) => cred.next_change(phase),
        }
    }

    /// After a failed background refresh: if the credential it started from
    /// is still current and inside the refresh-ahead window, serve it as
    /// fresh again for a while instead of retrying on every request.
    pub(super) fn snooze_background(&self, state: &State) {
        let Status::Ready(cred) = &state.status else {
            return;
        };
        if !self.driver.running.load(Ordering::Acquire) || cred.phase() != Phase::Ahead {
            return;
        }
        let until = Instant::now() + self.common.config.background_retry;
        let until = cred.stale_at.map_or(until, |stale| until.min(stale));
        {
            let mut snooze = self.driver.snooze.lock().unwrap_or_else(|p| p.into_inner());
            *snooze = Some((state.generation, until));
        }
        let _ = cred.phase.compare_exchange(
            Phase::Ahead as u8,
            Phase::Fresh as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.driver.poke();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The driver holds the manager weakly: wake it so that it sees the
        // manager gone and ends, instead of sleeping to the next deadline.
        self.driver.poke();
    }
}
