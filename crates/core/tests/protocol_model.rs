//! An exhaustive model check of the cross-process refresh protocol that
//! `TokenStore`'s docs describe ("One login, many processes"): three processes share one store and one
//! authorization server, and every interleaving of their steps, crashes,
//! lost messages and expiries is explored breadth-first, with a set of
//! visited states. The model follows the spec, not today's code.
//!
//! State. A token set is a pair `a/R`: `a` numbers access tokens in the
//! order the server issued them (a later one expires later, so "newer" is
//! "larger `a`"), `R` numbers refresh tokens. The store holds one record (a
//! set and its mark: `Live`, `Presented{retried}`, `Ended{reason}`) and the
//! refresh lock. Each process holds a set in memory (or is degraded /
//! ended) and a program counter: idle, asking for the lock (step 2),
//! holding it before the re-read (3), before writing `Presented` (4),
//! before sending, awaiting the answer (5). Each step is one atomic action;
//! a crash can hit between any two (the lock frees, memory is lost, the
//! process restarts at once by loading the store, so no "crashed" flag is
//! kept; a crash of an idle process is left out, as it only reloads the
//! store like step 1). The server rotates on every refresh (or never, for
//! `Rotation::Never`), detects reuse of a token it rotated away and does
//! not accept under its grace by revoking the grant, and may answer 5xx.
//! Requests can be lost on the way, answers lost or late (the client gave
//! up: ignored), and the server processes requests whose sender is gone.
//!
//! Time is abstract. "Access tokens expire" is an action that makes every
//! set issued so far due; only due processes refresh. The grace window is
//! two booleans closed by actions: the client's (`now - at < g` for the
//! mark's `at`) and the server's (opened by the rotation, so later). What
//! they may do is bounded by three assumptions, each from a bound `D` on
//! how long a request may travel before the server processes it: (T1) a
//! request decided while its refresh token was live reaches the server
//! inside the grace that token's rotation opens (`D < g`); (T2) with the
//! retry margin (fix 1) so does a grace retry decided in a client window
//! that opened before the rotation; (T3) a request in flight when the
//! server issued a newer set is processed or lost before that set expires
//! (`D` < access-token lifetime). Without them any protocol falls to a
//! request that arrives a year late.
//!
//! Checks, in every reachable state: I1 the server never detects reuse; I2
//! a process ends a session (tombstone, or its own end) only after the
//! server revoked the grant, or after a presentation of that refresh token
//! (its `Presented` mark written) went unanswered and could not be retried
//! (no grace, client window over, or the retry itself unanswered); I3 at
//! most one presentation awaited at once (senders that crashed or gave up
//! do not count); no stuck state (nothing can move, a process
//! mid-protocol). And progress: some reachable quiet state (expiries spent,
//! nothing in flight) has every process and the store on the newest set.
//! Budgets (expiries, crashes, faults = lost request / lost or late
//! answer, 5xx answers, revocations, lost leases) keep the space finite.
//! Not modeled: logins and logouts (`set`, `clear`, `end_session`, which
//! take the lock, or write through their own process's lease, like the
//! saves of step 5), store writes that fail other than by a lost lease, `Rotation::Detect`, the degraded access
//! token's own expiry.
//!
//! Findings (each pinned by a test below, with its trace printed): the
//! spec's grace retry has three holes, fixed by [`Protocol::FIXED`] (the
//! retry margin; a 5xx restores the mark instead of writing `Live`; against
//! a server whose grace mints a new token, the retry waits out the first
//! request), and a Redis lease that expires mid-request lets a second
//! leader act on a live presentation (fix: the lease must outlive the
//! request). Strict rotation and `Rotation::Never` hold as specified. The
//! mutants (no re-read, release before the tombstone, no lock, no mark)
//! are each caught.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    hash::{BuildHasherDefault, Hasher},
    time::{Duration, Instant},
};

/// Processes sharing the store.
const N: usize = 3;
/// Requests in flight at once (awaited ones plus orphans); the budgets keep
/// it below this.
const MAX_REQUESTS: usize = 6;

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/// Why a session ended, as the tombstone says.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Reason {
    InvalidGrant,
    Unanswered,
}

/// The record's mark about its refresh token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Mark {
    Live,
    Presented { retried: bool },
    Ended(Reason),
}

/// The store's record: set `a/r` and its mark. For `Ended`, `r` stands for
/// the fingerprint (the token itself is gone).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Record {
    a: u8,
    r: u8,
    mark: Mark,
}

/// What a process holds in memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Mem {
    Set {
        a: u8,
        r: u8,
    },
    /// Refresh token dead (unanswered); serves its access token until it
    /// expires, never refreshes. Its access token no longer matters here.
    Degraded,
    /// Ended by invalid_grant.
    Ended,
}

/// Where a process is in the protocol. Everything from `Reread` to
/// `Awaiting` holds the lock (unless the lock is mutated away).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Pc {
    Idle,
    /// Step 1 found nothing newer: asks for the lock (step 2).
    WantLock,
    /// Holds the lock; the re-read is next (step 3).
    Reread,
    /// Decided to present; writes the `Presented` mark next (step 4).
    /// `timely`: a retry decided inside a client window that protects it (T2).
    Mark {
        retry: bool,
        timely: bool,
    },
    /// Mark written (or skipped); sends the request next.
    Send {
        retry: bool,
        timely: bool,
    },
    /// Request sent; awaits the answer (step 5).
    Awaiting {
        retry: bool,
    },
    /// Mutant (b) only: released the lock, writes the tombstone next.
    Tombstone(Reason),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Proc {
    mem: Mem,
    pc: Pc,
}

/// The token endpoint's answer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Answer {
    Tokens {
        a: u8,
        r: u8,
    },
    InvalidGrant,
    /// 5xx / 429: nothing was spent.
    Transient,
}

/// A token request presenting refresh token `r`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
struct Request {
    /// The process still awaiting it; `None` once it crashed or gave up.
    owner: Option<u8>,
    r: u8,
    /// A declared grace retry.
    retry: bool,
    /// Reaches the server inside the server's grace for `r` (T1, T2).
    timely: bool,
    /// Was in flight when the server issued a newer set (T3).
    old: bool,
    /// `None` until the server processed it. Orphans' answers are dropped
    /// at once (nobody listens), so only owned requests carry one.
    answer: Option<Answer>,
}

/// The authorization server's view of the grant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Server {
    /// The refresh token it accepts.
    live: u8,
    next_r: u8,
    /// The newest access token issued.
    issued: u8,
    /// The refresh token rotated away last, and whether its grace is open
    /// and unused (grace only).
    prev: Option<u8>,
    prev_open: bool,
    grace_used: bool,
    revoked: bool,
}

/// The client-side grace window, `now - at < g` for the last first
/// presentation of `r`. `early`: that mark was written while `r` was still
/// live, so the window opened before the server's (which opens at the
/// rotation) and closes before it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Window {
    r: u8,
    early: bool,
}

/// What is left of each bounded nondeterministic event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Budget {
    expiries: u8,
    crashes: u8,
    /// Requests dropped, answers lost, answers late.
    faults: u8,
    /// 5xx answers.
    transients: u8,
    /// The grant revoked by an administrator / a logout elsewhere.
    revocations: u8,
    /// A Redis lease lost under a live holder (its heartbeat failed, a long
    /// pause): the lock frees, the holder goes on.
    lease_losses: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct State {
    record: Record,
    lock: Option<u8>,
    server: Server,
    procs: [Proc; N],
    /// Sorted (so equal sets of requests are equal states); `None`s first.
    requests: [Option<Request>; MAX_REQUESTS],
    window: Option<Window>,
    /// Sets with `a < due_below` have expired: their holders refresh.
    due_below: u8,
    left: Budget,
    // Ghost state, for the checks only: the last refresh token a
    // presentation of which went unanswered (its sender timed out or
    // crashed), and the same for grace retries.
    unanswered: Option<u8>,
    retry_unanswered: Option<u8>,
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// How the server treats refresh tokens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rotation {
    /// Rotates on every refresh; any rotated-away token is reuse.
    Strict,
    /// Rotates, and accepts the token just rotated away once while its
    /// grace is open.
    Grace(GraceReply),
    /// Never rotates (`Rotation::Never`).
    Never,
}

/// What a server answers to the accepted grace reuse of the previous token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GraceReply {
    /// The refresh token it issued on the rotation, with a new access
    /// token: the lineage does not fork.
    Reissue,
    /// A new refresh token, and the one issued on the rotation dies. Airlock
    /// IAM documents its grace period so: "only the most recent new token
    /// pair is valid".
    Mint,
}

/// The protocol's switches: `SPEC` is the protocol as first written, before
/// this model found its holes; the mutants break one rule each; the
/// `fix_*` fields are the model's fixes (1–3 are in the coordinator, 4 is
/// not: see `FIXED`).
#[derive(Clone, Copy, Debug)]
struct Protocol {
    /// Step 3: re-read the record after taking the lock. Mutant (a): off.
    reread: bool,
    /// Step 3/5: write `Ended` before releasing. Mutant (b): release first
    /// (today's Redis store clears after the lease is gone).
    tombstone_before_release: bool,
    /// Step 2: the refresh lock. Mutant (c): none (today's FileStore).
    lock: bool,
    /// Step 4: write `Presented` before presenting. Mutant (d): off.
    presented_mark: bool,
    /// Fix 1: the client's grace window is `now - at < g - D`, so that a
    /// retry reaches the server before the server's grace (opened at the
    /// rotation, after `at`) closes. The spec says `now - at < g`.
    fix_retry_margin: bool,
    /// Fix 2: an answer that says nothing was spent (5xx) restores the mark
    /// the presentation replaced (`Presented{at, retried: false}` for a
    /// retry) instead of writing `Live`, which forgot the unanswered
    /// presentation before it and reopened the grace window.
    fix_restore_mark: bool,
    /// Fix 3: a grace retry waits until the unanswered presentation can no
    /// longer reach the server (`now - at >= D`), backing off until then.
    fix_retry_after_original: bool,
    /// Fix 4: at step 4 the leader checks that its lease has at least the
    /// attempt timeout (plus the save) left, and bounds the request by it,
    /// so the lock cannot expire while a presentation is awaited. The spec
    /// relies on the heartbeat instead.
    fix_lease_outlives_request: bool,
}

impl Protocol {
    const SPEC: Self = Self {
        reread: true,
        tombstone_before_release: true,
        lock: true,
        presented_mark: true,
        fix_retry_margin: false,
        fix_retry_after_original: false,
        fix_restore_mark: false,
        fix_lease_outlives_request: false,
    };

    const FIXED: Self = Self {
        fix_retry_margin: true,
        fix_retry_after_original: true,
        fix_restore_mark: true,
        fix_lease_outlives_request: true,
        ..Self::SPEC
    };
}

#[derive(Clone, Copy, Debug)]
struct Config {
    rotation: Rotation,
    protocol: Protocol,
    budget: Budget,
    /// I2 read strictly: only a request that actually left counts as an
    /// unanswered presentation, not a crash between the mark and the send.
    i2_only_sent_requests: bool,
    /// Give up (and fail the test) beyond this many states.
    max_states: usize,
}

impl Config {
    fn new(rotation: Rotation, protocol: Protocol) -> Self {
        Self {
            rotation,
            protocol,
            budget: Budget {
                expiries: 2,
                crashes: 1,
                faults: 2,
                transients: 1,
                revocations: 0,
                lease_losses: 0,
            },
            i2_only_sent_requests: false,
            max_states: 20_000_000,
        }
    }

    fn grace(&self) -> bool {
        matches!(self.rotation, Rotation::Grace(_))
    }
}

// ---------------------------------------------------------------------------
// Transitions
// ---------------------------------------------------------------------------

/// One atomic action; a trace is a list of them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Action {
    Expire,
    Start(u8),
    Lock(u8),
    GiveUp(u8),
    Reread(u8),
    Mark(u8),
    Send(u8),
    Deliver(u8),
    Timeout(u8),
    Tombstone(u8),
    Crash(u8),
    LeaseLost(u8),
    Serve(Request),
    Fail5xx(Request),
    Drop(Request),
    LoseAnswer(Request),
    ClientGraceEnds,
    ServerGraceEnds,
    Revoke,
}

/// A broken invariant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Violation {
    /// I1: the server saw refresh token `r` after rotating it away.
    Reuse { r: u8 },
    /// I2: process `p` ended refresh token `r` without cause.
    UnjustifiedEnd { p: u8, r: u8, reason: Reason },
    /// I3: two presentations awaited at once.
    TwoPresentations,
    /// Nothing can move, yet a process is mid-protocol.
    Stuck,
}

struct Succ {
    action: Action,
    next: State,
    violation: Option<Violation>,
}

fn ended(reason: Reason) -> Mem {
    match reason {
        Reason::InvalidGrant => Mem::Ended,
        Reason::Unanswered => Mem::Degraded,
    }
}

/// What a process takes from the record (adoption, restart).
fn adopt(rec: Record) -> Mem {
    match rec.mark {
        Mark::Ended(reason) => ended(reason),
        Mark::Live | Mark::Presented { .. } => Mem::Set { a: rec.a, r: rec.r },
    }
}

impl State {
    fn initial(cfg: &Config) -> Self {
        Self {
            record: Record {
                a: 0,
                r: 0,
                mark: Mark::Live,
            },
            lock: None,
            server: Server {
                live: 0,
                next_r: 1,
                issued: 0,
                prev: None,
                prev_open: false,
                grace_used: false,
                revoked: false,
            },
            procs: [Proc {
                mem: Mem::Set { a: 0, r: 0 },
                pc: Pc::Idle,
            }; N],
            requests: [None; MAX_REQUESTS],
            window: None,
            due_below: 0,
            left: cfg.budget,
            unanswered: None,
            retry_unanswered: None,
        }
    }

    fn requests(&self) -> impl Iterator<Item = Request> + '_ {
        self.requests.iter().flatten().copied()
    }

    fn add_request(&mut self, req: Request) {
        let Some(slot) = self.requests.iter_mut().find(|s| s.is_none()) else {
            panic!("more than {MAX_REQUESTS} requests in flight: raise MAX_REQUESTS");
        };
        *slot = Some(req);
        self.requests.sort();
    }

    fn remove_request(&mut self, req: Request) {
        if let Some(slot) = self.requests.iter_mut().find(|s| **s == Some(req)) {
            *slot = None;
        }
        self.requests.sort();
    }

    fn replace_request(&mut self, old: Request, new: Request) {
        if let Some(slot) = self.requests.iter_mut().find(|s| **s == Some(old)) {
            *slot = Some(new);
        }
        self.requests.sort();
    }

    fn owned_by(&self, p: u8) -> Option<Request> {
        self.requests().find(|q| q.owner == Some(p))
    }

    /// Whether a write "under the lock" by `p` lands: a lease checks that it
    /// still holds the lock (without a lock, every write lands).
    fn holds(&self, cfg: &Config, p: usize) -> bool {
        !cfg.protocol.lock || self.lock == Some(p as u8)
    }

    fn release(&mut self, p: usize) {
        if self.lock == Some(p as u8) {
            self.lock = None;
        }
    }

    fn window_open_for(&self, r: u8) -> bool {
        self.window.is_some_and(|w| w.r == r)
    }

    /// A request presenting `r` has not reached the server yet.
    fn presenting(&self, r: u8) -> bool {
        self.requests().any(|q| q.answer.is_none() && q.r == r)
    }

    fn set_of(&self, p: usize) -> Option<(u8, u8)> {
        match self.procs[p].mem {
            Mem::Set { a, r } => Some((a, r)),
            Mem::Degraded | Mem::Ended => None,
        }
    }

    /// I2, at the moment process `p` ends refresh token `r` for `reason`.
    fn end_is_justified(&self, cfg: &Config, r: u8, reason: Reason) -> bool {
        if self.server.revoked {
            return true;
        }
        match reason {
            // The server answers invalid_grant only once it revoked.
            Reason::InvalidGrant => false,
            Reason::Unanswered => {
                let could_retry =
                    cfg.grace() && self.window_open_for(r) && self.retry_unanswered != Some(r);
                self.unanswered == Some(r) && !could_retry
            }
        }
    }

    /// I3.
    fn check(&self) -> Option<Violation> {
        let awaiting = self
            .procs
            .iter()
            .filter(|p| matches!(p.pc, Pc::Awaiting { .. }))
            .count();
        (awaiting > 1).then_some(Violation::TwoPresentations)
    }

    /// Progress: nothing left to expire, and every process idle on the
    /// newest set the server issued, the store holding it too.
    fn settled_on_newest(&self) -> bool {
        let newest = Mem::Set {
            a: self.server.issued,
            r: self.server.live,
        };
        self.left.expiries == 0
            && !self.server.revoked
            && self.server.issued > 0
            && self.requests().next().is_none()
            && self.record
                == Record {
                    a: self.server.issued,
                    r: self.server.live,
                    mark: Mark::Live,
                }
            && self
                .procs
                .iter()
                .all(|p| p.pc == Pc::Idle && p.mem == newest)
    }
}

/// Writes the tombstone (before or after releasing, per the protocol) and
/// ends the process; checks I2 first.
fn tombstone(
    n: &mut State,
    cfg: &Config,
    p: usize,
    a: u8,
    r: u8,
    reason: Reason,
) -> Option<Violation> {
    let violation = (!n.end_is_justified(cfg, r, reason)).then_some(Violation::UnjustifiedEnd {
        p: p as u8,
        r,
        reason,
    });
    if cfg.protocol.tombstone_before_release {
        if n.holds(cfg, p) {
            n.record = Record {
                a,
                r,
                mark: Mark::Ended(reason),
            };
        }
        n.procs[p] = Proc {
            mem: ended(reason),
            pc: Pc::Idle,
        };
    } else {
        n.procs[p].pc = Pc::Tombstone(reason);
    }
    n.release(p);
    violation
}

/// Step 4 onwards: write the mark (unless mutated away), then send. A
/// presentation decided while `r` is live reaches the server inside the
/// grace its rotation opens (T1); a retry, per `timely` (T2).
fn present(n: &mut State, cfg: &Config, p: usize, r: u8, retry: bool, timely: bool) {
    let timely = timely || n.server.live == r;
    n.procs[p].pc = if cfg.protocol.presented_mark {
        Pc::Mark { retry, timely }
    } else {
        Pc::Send { retry, timely }
    };
}

/// The server processes a request presenting `r`.
fn serve(server: &mut Server, cfg: &Config, r: u8) -> (Answer, Option<Violation>) {
    if server.revoked {
        return (Answer::InvalidGrant, None);
    }
    if r == server.live {
        server.issued += 1;
        if cfg.rotation != Rotation::Never {
            server.prev = Some(r);
            server.prev_open = cfg.grace();
            server.grace_used = false;
            server.live = server.next_r;
            server.next_r += 1;
        }
        return (
            Answer::Tokens {
                a: server.issued,
                r: server.live,
            },
            None,
        );
    }
    if let Rotation::Grace(reply) = cfg.rotation
        && server.prev == Some(r)
        && server.prev_open
        && !server.grace_used
    {
        server.grace_used = true;
        server.issued += 1;
        if reply == GraceReply::Mint {
            server.live = server.next_r;
            server.next_r += 1;
        }
        return (
            Answer::Tokens {
                a: server.issued,
                r: server.live,
            },
            None,
        );
    }
    // Reuse detection: the whole grant is revoked.
    server.revoked = true;
    (Answer::InvalidGrant, Some(Violation::Reuse { r }))
}

fn successors(s: &State, cfg: &Config, out: &mut Vec<Succ>) {
    let mut push = |action, next, violation| {
        out.push(Succ {
            action,
            next,
            violation,
        })
    };
    for p in 0..N {
        process_steps(s, cfg, p, &mut push);
    }
    server_steps(s, cfg, &mut push);
    time_steps(s, &mut push);
}

fn process_steps(
    s: &State,
    cfg: &Config,
    p: usize,
    push: &mut impl FnMut(Action, State, Option<Violation>),
) {
    let pid = p as u8;
    let me = s.procs[p];
    // A crash at any step but idle (an idle crash only reloads the store,
    // which step 1 does anyway).
    if me.pc != Pc::Idle && s.left.crashes > 0 {
        let mut n = *s;
        n.left.crashes -= 1;
        n.release(p);
        if let Some(req) = s.owned_by(pid) {
            if req.answer.is_some() {
                n.remove_request(req);
            } else {
                n.replace_request(req, Request { owner: None, ..req });
            }
        }
        let began = match me.pc {
            Pc::Awaiting { retry } => Some(retry),
            Pc::Send { retry, .. } if !cfg.i2_only_sent_requests && cfg.protocol.presented_mark => {
                Some(retry)
            }
            _ => None,
        };
        if let (Some(retry), Some((_, r))) = (began, s.set_of(p)) {
            n.unanswered = Some(r);
            if retry {
                n.retry_unanswered = Some(r);
            }
        }
        n.procs[p] = Proc {
            mem: adopt(s.record),
            pc: Pc::Idle,
        };
        push(Action::Crash(pid), n, None);
    }
    // The lease expires under a live holder. With fix 4 it cannot once the
    // step-4 check passed.
    let exposed = match me.pc {
        Pc::Reread | Pc::Mark { .. } => true,
        Pc::Send { .. } | Pc::Awaiting { .. } => !cfg.protocol.fix_lease_outlives_request,
        _ => false,
    };
    if exposed && s.lock == Some(pid) && s.left.lease_losses > 0 {
        let mut n = *s;
        n.left.lease_losses -= 1;
        n.lock = None;
        push(Action::LeaseLost(pid), n, None);
    }
    let mut n = *s;
    let mut violation = None;
    match me.pc {
        Pc::Idle => {
            let Some((a, r)) = s.set_of(p) else { return };
            if a >= s.due_below {
                return;
            }
            // Step 1: load without the lock.
            let rec = s.record;
            if rec.a > a {
                n.procs[p].mem = adopt(rec);
            } else if let (true, Mark::Ended(reason)) = (rec.a == a && rec.r == r, rec.mark) {
                n.procs[p].mem = ended(reason);
            } else {
                n.procs[p].pc = Pc::WantLock;
            }
            push(Action::Start(pid), n, None);
        }
        Pc::WantLock => {
            if !cfg.protocol.lock {
                n.procs[p].pc = Pc::Reread;
                push(Action::Lock(pid), n, None);
            } else if s.lock.is_none() {
                n.lock = Some(pid);
                n.procs[p].pc = Pc::Reread;
                push(Action::Lock(pid), n, None);
            } else {
                // Busy: wait until it frees or the record changes (or the
                // deadline passes), then step 1 again.
                n.procs[p].pc = Pc::Idle;
                push(Action::GiveUp(pid), n, None);
            }
        }
        Pc::Reread => {
            let Some((a, r)) = s.set_of(p) else { return };
            let rec = s.record;
            if !cfg.protocol.reread {
                present(&mut n, cfg, p, r, false, false);
            } else if rec.a > a {
                n.procs[p].mem = adopt(rec);
                n.procs[p].pc = Pc::Idle;
                n.release(p);
            } else if let (true, Mark::Ended(reason)) = (rec.r == r, rec.mark) {
                n.procs[p] = Proc {
                    mem: ended(reason),
                    pc: Pc::Idle,
                };
                n.release(p);
            } else if let (true, Mark::Presented { retried }) = (rec.r == r && rec.a == a, rec.mark)
            {
                // A previous holder's presentation of R got no answer.
                match cfg.rotation {
                    Rotation::Never => present(&mut n, cfg, p, r, false, false),
                    Rotation::Grace(_) if !retried && s.window_open_for(r) => {
                        if cfg.protocol.fix_retry_after_original && s.presenting(r) {
                            // Too early: the first request may still reach
                            // the server. Back off, mark untouched.
                            n.procs[p].pc = Pc::Idle;
                            n.release(p);
                        } else {
                            let timely =
                                cfg.protocol.fix_retry_margin && s.window.is_some_and(|w| w.early);
                            present(&mut n, cfg, p, r, true, timely);
                        }
                    }
                    Rotation::Grace(_) | Rotation::Strict if !s.holds(cfg, p) => {
                        // The lease is gone: the tombstone write is refused,
                        // which fails the attempt (the next leader decides).
                        n.procs[p].pc = Pc::Idle;
                    }
                    Rotation::Grace(_) | Rotation::Strict => {
                        violation = tombstone(&mut n, cfg, p, a, r, Reason::Unanswered);
                    }
                }
            } else {
                present(&mut n, cfg, p, r, false, false);
            }
            push(Action::Reread(pid), n, violation);
        }
        Pc::Mark { retry, timely } => {
            let Some((a, r)) = s.set_of(p) else { return };
            if !s.holds(cfg, p) {
                // The lease check fails: the attempt gives up, nothing
                // presented.
                n.procs[p].pc = Pc::Idle;
                push(Action::Mark(pid), n, None);
                return;
            }
            n.record = Record {
                a,
                r,
                mark: Mark::Presented { retried: retry },
            };
            if !retry && cfg.grace() {
                // A new `at`: a new client window.
                n.window = Some(Window {
                    r,
                    early: s.server.live == r,
                });
            }
            n.procs[p].pc = Pc::Send { retry, timely };
            push(Action::Mark(pid), n, None);
        }
        Pc::Send { retry, timely } => {
            let Some((_, r)) = s.set_of(p) else { return };
            n.add_request(Request {
                owner: Some(pid),
                r,
                retry,
                timely: timely || s.server.live == r,
                old: false,
                answer: None,
            });
            n.procs[p].pc = Pc::Awaiting { retry };
            push(Action::Send(pid), n, None);
        }
        Pc::Awaiting { retry } => {
            let Some((a, r)) = s.set_of(p) else { return };
            let owned = s.owned_by(pid);
            // The answer arrives.
            if let Some(
                req @ Request {
                    answer: Some(answer),
                    ..
                },
            ) = owned
            {
                let mut n = *s;
                n.remove_request(req);
                let mut violation = None;
                match answer {
                    Answer::Tokens { a: a2, r: r2 } => {
                        // Saved through the lease; kept in memory even if
                        // the lease was lost and the save refused.
                        if s.holds(cfg, p) {
                            n.record = Record {
                                a: a2,
                                r: r2,
                                mark: Mark::Live,
                            };
                        }
                        n.procs[p] = Proc {
                            mem: Mem::Set { a: a2, r: r2 },
                            pc: Pc::Idle,
                        };
                        n.release(p);
                    }
                    Answer::InvalidGrant => {
                        violation = tombstone(&mut n, cfg, p, a, r, Reason::InvalidGrant);
                    }
                    Answer::Transient => {
                        let mark = if cfg.protocol.fix_restore_mark && retry {
                            Mark::Presented { retried: false }
                        } else {
                            Mark::Live
                        };
                        if s.holds(cfg, p) {
                            n.record = Record { a, r, mark };
                        }
                        n.procs[p].pc = Pc::Idle;
                        n.release(p);
                    }
                }
                push(Action::Deliver(pid), n, violation);
            }
            // The attempt times out: free if the request or its answer is
            // already gone, a fault if it is late.
            let late = owned.is_some();
            if late && s.left.faults == 0 {
                return;
            }
            if let Some(req) = owned {
                n.left.faults -= 1;
                if req.answer.is_some() {
                    n.remove_request(req);
                } else {
                    n.replace_request(req, Request { owner: None, ..req });
                }
            }
            n.unanswered = Some(r);
            if retry {
                n.retry_unanswered = Some(r);
            }
            match cfg.rotation {
                Rotation::Never => {
                    if s.holds(cfg, p) {
                        n.record = Record {
                            a,
                            r,
                            mark: Mark::Live,
                        };
                    }
                    n.procs[p].pc = Pc::Idle;
                    n.release(p);
                }
                Rotation::Grace(_) if !retry && s.window_open_for(r) => {
                    // Leave `Presented`: the next leader retries once.
                    n.procs[p].pc = Pc::Idle;
                    n.release(p);
                }
                Rotation::Grace(_) | Rotation::Strict => {
                    violation = tombstone(&mut n, cfg, p, a, r, Reason::Unanswered);
                }
            }
            push(Action::Timeout(pid), n, violation);
        }
        Pc::Tombstone(reason) => {
            let Some((a, r)) = s.set_of(p) else { return };
            n.record = Record {
                a,
                r,
                mark: Mark::Ended(reason),
            };
            n.procs[p] = Proc {
                mem: ended(reason),
                pc: Pc::Idle,
            };
            push(Action::Tombstone(pid), n, None);
        }
    }
}

fn server_steps(s: &State, cfg: &Config, push: &mut impl FnMut(Action, State, Option<Violation>)) {
    for (i, req) in s.requests().enumerate() {
        // Equal requests give equal successors.
        if s.requests().take(i).any(|q| q == req) {
            continue;
        }
        if req.answer.is_some() {
            if s.left.faults > 0 {
                let mut n = *s;
                n.left.faults -= 1;
                n.remove_request(req);
                push(Action::LoseAnswer(req), n, None);
            }
            continue;
        }
        // Processed.
        let mut n = *s;
        n.remove_request(req);
        let (answer, violation) = serve(&mut n.server, cfg, req.r);
        if matches!(answer, Answer::Tokens { .. }) {
            // T3: whatever else is in flight is now older than the newest set.
            for q in n.requests.iter_mut().flatten() {
                if q.answer.is_none() {
                    q.old = true;
                }
            }
        }
        if req.owner.is_some() {
            n.add_request(Request {
                answer: Some(answer),
                ..req
            });
        }
        push(Action::Serve(req), n, violation);
        // 5xx: nothing spent.
        if s.left.transients > 0 {
            let mut n = *s;
            n.left.transients -= 1;
            if req.owner.is_some() {
                n.replace_request(
                    req,
                    Request {
                        answer: Some(Answer::Transient),
                        ..req
                    },
                );
            } else {
                n.remove_request(req);
            }
            push(Action::Fail5xx(req), n, None);
        }
        // Lost on the way.
        if s.left.faults > 0 {
            let mut n = *s;
            n.left.faults -= 1;
            n.remove_request(req);
            push(Action::Drop(req), n, None);
        }
    }
}

fn time_steps(s: &State, push: &mut impl FnMut(Action, State, Option<Violation>)) {
    // T3: a set expires only once the requests older than it are gone.
    if s.left.expiries > 0
        && s.due_below <= s.server.issued
        && !s.requests().any(|q| q.answer.is_none() && q.old)
    {
        let mut n = *s;
        n.left.expiries -= 1;
        n.due_below = s.server.issued + 1;
        push(Action::Expire, n, None);
    }
    if s.window.is_some() {
        let mut n = *s;
        n.window = None;
        push(Action::ClientGraceEnds, n, None);
    }
    // The server's grace for `prev` opened at its rotation: it closes after
    // a client window that opened before it, and after the requests that
    // T1/T2 say reach it in time.
    if s.server.prev_open
        && let Some(prev) = s.server.prev
        && s.window
            != Some(Window {
                r: prev,
                early: true,
            })
        && !s
            .requests()
            .any(|q| q.answer.is_none() && q.r == prev && q.timely)
        && !s.procs.iter().any(|p| match (p.mem, p.pc) {
            (Mem::Set { r, .. }, Pc::Mark { timely, .. } | Pc::Send { timely, .. }) => {
                r == prev && timely
            }
            _ => false,
        })
    {
        let mut n = *s;
        n.server.prev_open = false;
        push(Action::ServerGraceEnds, n, None);
    }
    if s.left.revocations > 0 && !s.server.revoked {
        let mut n = *s;
        n.left.revocations -= 1;
        n.server.revoked = true;
        push(Action::Revoke, n, None);
    }
}

// ---------------------------------------------------------------------------
// Explorer
// ---------------------------------------------------------------------------

/// A small multiplicative hasher (the states are a few dozen bytes of
/// small integers; SipHash would dominate the run time in a debug build).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Visited = HashMap<State, u32, BuildHasherDefault<FxHasher>>;

/// A violation and the shortest trace to it.
struct Counterexample {
    violation: Violation,
    trace: Vec<String>,
}

struct Outcome {
    states: usize,
    transitions: usize,
    elapsed: Duration,
    violation: Option<Counterexample>,
    /// Some reachable quiet state has every process on the newest set.
    progress: bool,
    coverage: Coverage,
}

/// Which outcomes some reachable state shows (so that a passing check is
/// not vacuous).
#[derive(Default)]
struct Coverage {
    /// The server accepted a grace reuse (and did not revoke).
    grace_accepted: bool,
    /// A process degraded (its refresh token ended unanswered).
    degraded: bool,
    /// A process ended (invalid_grant).
    ended: bool,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} states, {} transitions, {:.1?}, progress reachable: {}",
            self.states, self.transitions, self.elapsed, self.progress
        )?;
        if let Some(c) = &self.violation {
            write!(f, "\nVIOLATION: {:?}\n", c.violation)?;
            for line in &c.trace {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// Breadth-first over every reachable state; stops at the first violation
/// (so its trace is a shortest one).
fn explore(cfg: &Config) -> Outcome {
    let started = Instant::now();
    let init = State::initial(cfg);
    let mut visited = Visited::default();
    // For each state id: its parent's id and the action that led to it.
    let mut parents: Vec<(u32, Option<Action>)> = vec![(0, None)];
    let mut queue = VecDeque::new();
    visited.insert(init, 0);
    queue.push_back((init, 0u32));
    let mut succs = Vec::new();
    let mut transitions = 0;
    let mut progress = false;
    let mut coverage = Coverage::default();
    let found = |parents: &[(u32, Option<Action>)], id: u32, last: Option<Action>, v| {
        let mut actions: Vec<Action> = last.into_iter().collect();
        let mut at = id;
        while let (parent, Some(action)) = parents[at as usize] {
            actions.push(action);
            at = parent;
        }
        actions.reverse();
        Some(Counterexample {
            violation: v,
            trace: replay(cfg, &actions),
        })
    };
    let mut violation = None;
    'search: while let Some((s, id)) = queue.pop_front() {
        succs.clear();
        successors(&s, cfg, &mut succs);
        if succs.is_empty() && s.procs.iter().any(|p| p.pc != Pc::Idle) {
            violation = found(&parents, id, None, Violation::Stuck);
            break;
        }
        progress |= s.settled_on_newest();
        coverage.grace_accepted |= s.server.grace_used && !s.server.revoked;
        coverage.degraded |= s.procs.iter().any(|p| p.mem == Mem::Degraded);
        coverage.ended |= s.procs.iter().any(|p| p.mem == Mem::Ended);
        for succ in succs.drain(..) {
            transitions += 1;
            if let Some(v) = succ.violation.or_else(|| succ.next.check()) {
                violation = found(&parents, id, Some(succ.action), v);
                break 'search;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = visited.entry(succ.next) {
                let nid = parents.len() as u32;
                e.insert(nid);
                parents.push((id, Some(succ.action)));
                queue.push_back((succ.next, nid));
            }
        }
        assert!(
            visited.len() <= cfg.max_states,
            "more than {} states: shrink the budgets",
            cfg.max_states
        );
    }
    Outcome {
        states: visited.len(),
        transitions,
        elapsed: started.elapsed(),
        violation,
        progress,
        coverage,
    }
}

/// The trace, one line per action with the state it leads to.
fn replay(cfg: &Config, actions: &[Action]) -> Vec<String> {
    let mut s = State::initial(cfg);
    let mut lines = vec![format!("start: {s}")];
    let mut succs = Vec::new();
    for &action in actions {
        succs.clear();
        successors(&s, cfg, &mut succs);
        let Some(succ) = succs.iter().find(|x| x.action == action) else {
            lines.push(format!("(replay lost: {action:?})"));
            break;
        };
        s = succ.next;
        lines.push(format!("{:<34} => {s}", describe(action)));
    }
    lines
}

fn describe(action: Action) -> String {
    let req = |q: Request| {
        let who = q.owner.map_or("orphan".to_string(), |p| format!("P{p}"));
        let retry = if q.retry { " (grace retry)" } else { "" };
        format!("R{} from {who}{retry}", q.r)
    };
    match action {
        Action::Expire => "access tokens expire".into(),
        Action::Start(p) => format!("P{p} step 1: load"),
        Action::Lock(p) => format!("P{p} step 2: lock"),
        Action::GiveUp(p) => format!("P{p} lock busy: back to step 1"),
        Action::Reread(p) => format!("P{p} step 3: re-read"),
        Action::Mark(p) => format!("P{p} step 4: write Presented"),
        Action::Send(p) => format!("P{p} sends the request"),
        Action::Deliver(p) => format!("P{p} step 5: gets the answer"),
        Action::Timeout(p) => format!("P{p} step 5: times out"),
        Action::Tombstone(p) => format!("P{p} writes the tombstone"),
        Action::Crash(p) => format!("P{p} crashes, restarts"),
        Action::LeaseLost(p) => format!("P{p}'s lease expires"),
        Action::Serve(q) => format!("server processes {}", req(q)),
        Action::Fail5xx(q) => format!("server 5xx to {}", req(q)),
        Action::Drop(q) => format!("request lost: {}", req(q)),
        Action::LoseAnswer(q) => format!("answer lost: {}", req(q)),
        Action::ClientGraceEnds => "client grace window ends".into(),
        Action::ServerGraceEnds => "server grace window ends".into(),
        Action::Revoke => "grant revoked (admin)".into(),
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rec = self.record;
        let mark = match rec.mark {
            Mark::Live => "Live".to_string(),
            Mark::Presented { retried } => format!("Presented{{retried:{retried}}}"),
            Mark::Ended(reason) => format!("Ended({reason:?})"),
        };
        write!(f, "store a{}/R{} {mark}", rec.a, rec.r)?;
        if let Some(p) = self.lock {
            write!(f, ", lock P{p}")?;
        }
        let sv = self.server;
        write!(f, " | server R{} live", sv.live)?;
        if let Some(prev) = sv.prev {
            let grace = match (sv.prev_open, sv.grace_used) {
                (true, false) => " (grace open)",
                (true, true) => " (grace used)",
                (false, _) => "",
            };
            write!(f, ", R{prev} prev{grace}")?;
        }
        if sv.revoked {
            write!(f, ", REVOKED")?;
        }
        if let Some(w) = self.window {
            write!(f, " | client window R{}", w.r)?;
        }
        write!(f, " |")?;
        for (i, p) in self.procs.iter().enumerate() {
            let mem = match p.mem {
                Mem::Set { a, r } => format!("a{a}/R{r}"),
                Mem::Degraded => "degraded".into(),
                Mem::Ended => "ended".into(),
            };
            let pc = match p.pc {
                Pc::Idle => String::new(),
                Pc::WantLock => " wants lock".into(),
                Pc::Reread => " re-read next".into(),
                Pc::Mark { .. } => " mark next".into(),
                Pc::Send { .. } => " send next".into(),
                Pc::Awaiting { .. } => " awaiting".into(),
                Pc::Tombstone(_) => " tombstone next".into(),
            };
            write!(f, " P{i} {mem}{pc};")?;
        }
        for q in self.requests() {
            let who = q.owner.map_or("orphan".to_string(), |p| format!("P{p}"));
            let answer = match q.answer {
                None => String::new(),
                Some(Answer::Tokens { a, r }) => format!(" -> a{a}/R{r}"),
                Some(a) => format!(" -> {a:?}"),
            };
            write!(f, " [R{} {who}{answer}]", q.r)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The spec with one rule changed.
fn spec_with(change: fn(&mut Protocol)) -> Protocol {
    let mut protocol = Protocol::SPEC;
    change(&mut protocol);
    protocol
}

/// The fixed protocol with one rule changed.
fn fixed_with(change: fn(&mut Protocol)) -> Protocol {
    let mut protocol = Protocol::FIXED;
    change(&mut protocol);
    protocol
}

/// Explores `cfg`, prints the numbers, and asserts that the protocol holds
/// every invariant and can make progress.
fn assert_holds(name: &str, cfg: &Config) -> Outcome {
    let outcome = explore(cfg);
    println!("{name}: {outcome}");
    assert!(outcome.violation.is_none(), "{name}: {outcome}");
    assert!(outcome.progress, "{name}: no final state on the newest set");
    outcome
}

/// Explores `cfg` and asserts that the checker finds a violation that
/// `expected` accepts; prints its trace.
fn assert_finds(name: &str, cfg: &Config, expected: fn(&Violation) -> bool) {
    let outcome = explore(cfg);
    println!("{name}: {outcome}");
    let Some(c) = &outcome.violation else {
        panic!("{name}: the checker found no violation ({outcome})");
    };
    assert!(expected(&c.violation), "{name}: unexpected {outcome}");
}

fn reuse(v: &Violation) -> bool {
    matches!(v, Violation::Reuse { .. })
}

fn any_race(v: &Violation) -> bool {
    !matches!(v, Violation::Stuck)
}

#[test]
fn three_processes_never_present_a_spent_refresh_token_under_strict_rotation() {
    let mut cfg = Config::new(Rotation::Strict, Protocol::SPEC);
    // Strict rotation is the smallest space: afford a third expiry, a
    // second crash and a revocation.
    cfg.budget = Budget {
        expiries: 3,
        crashes: 2,
        faults: 2,
        transients: 1,
        revocations: 1,
        lease_losses: 0,
    };
    let outcome = assert_holds("strict rotation, spec", &cfg);
    // Not vacuous: sessions do end (unanswered presentations, revocation).
    assert!(outcome.coverage.degraded && outcome.coverage.ended);
}

#[test]
fn a_server_that_never_rotates_never_has_a_session_ended_by_a_race() {
    let cfg = Config::new(Rotation::Never, Protocol::SPEC);
    let outcome = assert_holds("Rotation::Never, spec", &cfg);
    // An unanswered refresh is retried, never ends the session.
    assert!(!outcome.coverage.degraded);
}

/// Hole 1 (timing): the spec retries while `now - at < g`, but the retry
/// then travels up to `D` more, and the server's grace opened at the
/// rotation, which can be only just after `at`: the retry can arrive after
/// the server's grace and be reuse. Fix 1: retry only while
/// `now - at < g - D` (`D`: the attempt timeout, or the longest a request
/// may take to reach the server).
#[test]
fn with_a_reuse_grace_the_spec_as_written_lets_a_retry_arrive_after_the_servers_grace() {
    let cfg = Config::new(Rotation::Grace(GraceReply::Reissue), Protocol::SPEC);
    assert_finds("grace, spec as written", &cfg, reuse);
}

/// Hole 2: a 5xx to the grace retry makes step 5 write `S` back `Live`.
/// That forgets that R's first presentation went unanswered (the server
/// may have rotated R already), and the next leader presents R afresh with
/// a new `at` — outside the server's grace, or a second grace use. Fix 2:
/// an answer that says nothing was spent restores the mark the
/// presentation replaced: `Presented{at, retried: false}` after a retry.
#[test]
fn a_5xx_to_a_grace_retry_that_clears_the_mark_lets_the_next_leader_reuse() {
    let protocol = spec_with(|p| p.fix_retry_margin = true);
    let cfg = Config::new(Rotation::Grace(GraceReply::Reissue), protocol);
    assert_finds("grace, margin only", &cfg, reuse);
}

/// Hole 3: with a server whose grace reuse mints a new refresh token and
/// kills the one the rotation issued ("only the most recent pair is
/// valid"), the unanswered first request, still on its way, can reach the
/// server after the retry: the retry's answer (saved) is then dead, and the
/// next refresh presents it. Fix 3: retry only once the first request can
/// no longer reach the server (`now - at >= D`); the window for the retry
/// is then `[at + D, at + g - D)`, which needs `g > 2D`.
#[test]
fn a_grace_that_mints_lets_the_unanswered_request_kill_the_retrys_refresh_token() {
    let protocol = spec_with(|p| {
        p.fix_retry_margin = true;
        p.fix_restore_mark = true;
    });
    let cfg = Config::new(Rotation::Grace(GraceReply::Mint), protocol);
    assert_finds("minting grace, fixes 1 and 2", &cfg, reuse);
}

/// THE FIXED PROTOCOL (fixes 1-4, not the spec as written) holds with
/// either kind of grace server; against a server whose grace reissues the
/// rotated token, fixes 1 and 2 suffice.
#[test]
fn the_fixed_protocol_never_presents_a_spent_refresh_token_under_a_reuse_grace() {
    for reply in [GraceReply::Reissue, GraceReply::Mint] {
        let cfg = Config::new(Rotation::Grace(reply), Protocol::FIXED);
        let outcome = assert_holds(&format!("grace ({reply:?}), fixed"), &cfg);
        // Not vacuous: the server does accept grace retries.
        assert!(outcome.coverage.grace_accepted && outcome.coverage.degraded);
    }
    let protocol = fixed_with(|p| p.fix_retry_after_original = false);
    let cfg = Config::new(Rotation::Grace(GraceReply::Reissue), protocol);
    assert_holds("grace (Reissue), fixes 1 and 2", &cfg);
}

/// Mutant (a): no re-read after the lock. With no faults at all, the leader
/// presents what it loaded before it took the lock, though another process
/// refreshed in between (the classic race). With faults, the shortest trace
/// is a leader that never sees the `Presented` mark its crashed
/// predecessor left (only the re-read looks at it).
#[test]
fn without_a_reread_after_the_lock_a_leader_presents_a_spent_refresh_token() {
    let protocol = spec_with(|p| p.reread = false);
    let mut cfg = Config::new(Rotation::Strict, protocol);
    cfg.budget.crashes = 0;
    cfg.budget.faults = 0;
    cfg.budget.transients = 0;
    assert_finds("mutant (a) no re-read, strict, no faults", &cfg, reuse);
    assert_finds(
        "mutant (a) no re-read, strict",
        &Config::new(Rotation::Strict, protocol),
        reuse,
    );
    let protocol = fixed_with(|p| p.reread = false);
    assert_finds(
        "mutant (a) no re-read, grace fixed",
        &Config::new(Rotation::Grace(GraceReply::Reissue), protocol),
        reuse,
    );
}

/// Mutant (b), today's Redis store: the lease is released before the
/// session is cleared, so the next leader reads the set as live and
/// presents its refresh token, which the unanswered request may have
/// spent. The `Presented` mark alone covers that window (the next leader
/// finds it and ends instead): the explorer finds nothing with the mark, so
/// the mutant runs without it — and without crashes, which break a
/// mark-less protocol by themselves (mutant d).
#[test]
fn releasing_the_lock_before_the_tombstone_lets_the_next_leader_present_a_spent_token() {
    let mut cfg = Config::new(
        Rotation::Strict,
        spec_with(|p| {
            p.tombstone_before_release = false;
            p.presented_mark = false;
        }),
    );
    cfg.budget.crashes = 0;
    assert_finds("mutant (b) release first, no mark, strict", &cfg, reuse);
    // The mark-less protocol that keeps the order holds without crashes:
    // the violation above is the order's.
    cfg.protocol.tombstone_before_release = true;
    assert_holds("no mark, tombstone first, no crash, strict", &cfg);
    // And with the mark, the order does not matter.
    let cfg = Config::new(
        Rotation::Strict,
        spec_with(|p| p.tombstone_before_release = false),
    );
    assert_holds("mutant (b) release first, with the mark, strict", &cfg);
}

/// Mutant (c), today's FileStore: no lock. The shortest trace is a process
/// that finds another's fresh `Presented` mark and ends the session while
/// that request is still on its way; two presentations at once and reuse
/// follow too.
#[test]
fn without_a_lock_processes_race_on_one_refresh_token() {
    let protocol = spec_with(|p| p.lock = false);
    assert_finds(
        "mutant (c) no lock, strict",
        &Config::new(Rotation::Strict, protocol),
        any_race,
    );
    let protocol = fixed_with(|p| p.lock = false);
    assert_finds(
        "mutant (c) no lock, grace fixed",
        &Config::new(Rotation::Grace(GraceReply::Reissue), protocol),
        any_race,
    );
}

/// Mutant (d): no `Presented` mark. A leader that crashes mid-request
/// leaves the record live, and the next leader presents the refresh token
/// the server may have rotated.
#[test]
fn without_the_presented_mark_a_crash_mid_request_lets_the_next_leader_reuse() {
    let protocol = spec_with(|p| p.presented_mark = false);
    assert_finds(
        "mutant (d) no mark, strict",
        &Config::new(Rotation::Strict, protocol),
        reuse,
    );
    let protocol = fixed_with(|p| p.presented_mark = false);
    assert_finds(
        "mutant (d) no mark, grace fixed",
        &Config::new(Rotation::Grace(GraceReply::Reissue), protocol),
        reuse,
    );
}

/// A limit of any mark-before-send protocol, not a bug: a leader that
/// crashes after writing `Presented` but before its request left cannot be
/// told from one whose request was carried out, so under strict rotation
/// the next leader ends a session on which nothing was spent. Read
/// strictly ("a presentation that got no answer" = a request that left),
/// I2 fails here; the other tests count the written mark as the
/// presentation. No fix short of asking the server.
#[test]
fn a_crash_between_the_mark_and_the_request_ends_a_session_nothing_was_spent_on() {
    let mut cfg = Config::new(Rotation::Strict, Protocol::SPEC);
    cfg.i2_only_sent_requests = true;
    assert_finds("I2 read strictly, strict", &cfg, |v| {
        matches!(v, Violation::UnjustifiedEnd { .. })
    });
}

/// Hole 4 (Redis): the spec keeps the lease alive by a heartbeat and checks
/// it only at step 4. If the lease expires while the request is out (the
/// heartbeat failed, a long pause), the next leader finds `Presented` and
/// ends a session whose request is still on its way (or, with a grace,
/// presents R a second time while the first is awaited), and the first
/// holder's save is refused. Fix 4: step 4 checks that the lease has the
/// attempt timeout (plus the save) left and bounds the request by it. (The
/// model reads "under the lock" as "through the lease": a write the lease
/// refuses is not made, and at step 3 it fails the attempt rather than
/// ending the session.)
#[test]
fn a_lease_that_expires_mid_request_lets_a_second_leader_act_on_a_live_presentation() {
    let mut cfg = Config::new(Rotation::Strict, Protocol::SPEC);
    cfg.budget.lease_losses = 1;
    assert_finds("lease lost, strict, spec", &cfg, any_race);
    cfg.protocol.fix_lease_outlives_request = true;
    assert_holds("lease lost, strict, fix 4", &cfg);
    let mut cfg = Config::new(
        Rotation::Grace(GraceReply::Reissue),
        fixed_with(|p| p.fix_lease_outlives_request = false),
    );
    cfg.budget.lease_losses = 1;
    assert_finds("lease lost, grace, fixes 1-3", &cfg, any_race);
    cfg.protocol.fix_lease_outlives_request = true;
    // Smaller: with the default budgets this is 690 000 states, 13 s
    // unoptimized. The grace paths themselves are covered above.
    cfg.budget.faults = 1;
    cfg.budget.transients = 0;
    assert_holds("lease lost, grace, fixed (1 fault, no 5xx)", &cfg);
}
