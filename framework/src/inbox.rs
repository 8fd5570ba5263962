//! The remote inbox: how messages from the network reach a named actor.
//!
//! Every actor spawned from an [`ActorSpec`](crate::supervision::ActorSpec)
//! gets, next to its actix mailbox, an inbox for what the node's inbound
//! dispatcher delivers: decoded tells and asks from other nodes, each
//! already bound to the handler that runs it. A small future spawned in
//! the actor's own context (`Drain`) takes the inbox's contents and runs
//! them on the actor, in order, exactly as actix runs mailbox messages
//! (the handler's result is handled the same way, so a handler returning a
//! future or an actor future behaves as it would for a local message).
//!
//! Why not the actix mailbox: a message put in an actix mailbox costs two
//! allocations and several atomic operations, and wakes the actor each
//! time; the dispatcher delivers frames by the hundred. Here a delivery is
//! one allocation and an uncontended lock, and the actor is woken once per
//! batch, when it had run out of work.
//!
//! Guarantees:
//! - **Order.** Messages run in the order they were put in. (Messages that
//!   local senders put in the actix mailbox are a different sender, with
//!   no order between the two.)
//! - **Bounded.** `Inbox::try_push` refuses past the capacity (the
//!   actor's `mailbox` setting) and `Inbox::push_when_room` waits for
//!   room instead. The drain takes the whole backlog out at once, so up
//!   to twice the capacity can be waiting: a full inbox, plus what the
//!   drain took out and has not run yet. Tells and asks alike.
//! - **Actor semantics.** Nothing runs while the actor is waiting on a
//!   future (`ctx.wait`) or stopping; the drain runs at most
//!   256 messages (`DRAIN_BATCH`) per poll, then lets the actor's other work
//!   run. When the actor stops (or panics), its context and the drain are
//!   dropped: the inbox closes, what was still waiting is dropped (an ask
//!   among it fails with `ActorStopped`, like a message left in a stopped
//!   actor's mailbox), and further pushes are refused as closed.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use actix::{Actor, ActorFuture, AsyncContext, Context};

/// One delivery: runs one message's handler on the actor.
pub(crate) type Job<A> = Box<dyn FnOnce(&mut A, &mut <A as Actor>::Context) + Send>;

/// Most messages the drain runs in one poll before it lets the actor's
/// mailbox and other futures have a turn.
pub(crate) const DRAIN_BATCH: usize = 256;

/// Why a push did not put the job in.
pub(crate) enum Refused<A: Actor> {
    /// The inbox holds its capacity: try again when there is room.
    Full(Job<A>),
    /// The actor has stopped.
    Closed,
}

/// The inbox of one actor instance (a restarted actor gets a new one).
pub(crate) struct Inbox<A: Actor> {
    state: Mutex<State<A>>,
    capacity: usize,
}

struct State<A: Actor> {
    jobs: VecDeque<Job<A>>,
    /// The actor's task, registered by the drain.
    drain: Option<Waker>,
    /// The drain found nothing to do and waits for a push to wake it.
    drain_idle: bool,
    /// Pushes waiting for room.
    room: Vec<Waker>,
    /// The actor has stopped: nothing is taken any more.
    closed: bool,
}

impl<A: Actor> Inbox<A> {
    /// An empty inbox holding up to `capacity` messages (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                drain: None,
                drain_idle: false,
                room: Vec::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<A>> {
        // Jobs never run under the lock: no invariant spans a panic point.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put `job` in unless the inbox is full or closed.
    pub(crate) fn try_push(&self, job: Job<A>) -> Result<(), Refused<A>> {
        let mut s = self.lock();
        if s.closed {
            return Err(Refused::Closed);
        }
        if s.jobs.len() >= self.capacity {
            return Err(Refused::Full(job));
        }
        s.jobs.push_back(job);
        let wake = if s.drain_idle {
            s.drain_idle = false;
            s.drain.clone()
        } else {
            None
        };
        drop(s);
        if let Some(w) = wake {
            w.wake();
        }
        Ok(())
    }

    /// Put `job` in as soon as there is room. Resolves `true` once it is in,
    /// `false` if the actor stopped first.
    pub(crate) fn push_when_room(
        self: &Arc<Self>,
        job: Job<A>,
    ) -> impl Future<Output = bool> + use<A> {
        let inbox = self.clone();
        let mut job = Some(job);
        std::future::poll_fn(move |cx| {
            let Some(j) = job.take() else {
                return Poll::Ready(true);
            };
            match inbox.try_push(j) {
                Ok(()) => Poll::Ready(true),
                Err(Refused::Closed) => Poll::Ready(false),
                Err(Refused::Full(j)) => {
                    job = Some(j);
                    let mut s = inbox.lock();
                    // Room may have opened between the push and the lock.
                    if s.jobs.len() < inbox.capacity || s.closed {
                        drop(s);
                        cx.waker().wake_by_ref();
                    } else {
                        s.room.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
    }

    /// Messages waiting (not yet taken by the drain).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().jobs.len()
    }
}

/// Runs an [`Inbox`]'s messages on its actor; spawned once in the actor's
/// context (see [`Drain::spawn`]) and dropped with it, which closes the
/// inbox.
pub(crate) struct Drain<A: Actor> {
    inbox: Arc<Inbox<A>>,
    /// Taken out of the inbox, not run yet (kept, with its capacity, across
    /// polls).
    taken: VecDeque<Job<A>>,
}

impl<A: Actor<Context = Context<A>>> Drain<A> {
    /// Create an inbox of `capacity` and spawn its drain in `ctx`.
    pub(crate) fn spawn(ctx: &mut Context<A>, capacity: usize) -> Arc<Inbox<A>> {
        let inbox = Arc::new(Inbox::new(capacity));
        ctx.spawn(Drain {
            inbox: inbox.clone(),
            taken: VecDeque::new(),
        });
        inbox
    }
}

impl<A: Actor<Context = Context<A>>> ActorFuture<A> for Drain<A> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        // actix polls its spawned futures right after its mailbox, before
        // it looks at a wait a mailbox message has just begun: check here
        // too, not only after a job of ours.
        if ctx.waiting() {
            task.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut ran = 0;
        loop {
            if this.taken.is_empty() {
                let mut s = this.inbox.lock();
                if s.jobs.is_empty() {
                    if !s.drain.as_ref().is_some_and(|w| w.will_wake(task.waker())) {
                        s.drain = Some(task.waker().clone());
                    }
                    s.drain_idle = true;
                    return Poll::Pending;
                }
                std::mem::swap(&mut s.jobs, &mut this.taken);
                let room = std::mem::take(&mut s.room);
                drop(s);
                for w in room {
                    w.wake();
                }
            }
            while let Some(job) = this.taken.pop_front() {
                job(act, ctx);
                ran += 1;
                // Like actix's mailbox: nothing more while the actor waits on
                // a future or is stopping; and a turn for the rest of the
                // actor's work now and then. The context polls this again
                // once it can (woken here in case nothing else wakes it).
                if ctx.waiting() || ran >= DRAIN_BATCH {
                    task.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<A: Actor> Drop for Drain<A> {
    fn drop(&mut self) {
        let (jobs, room) = {
            let mut s = self.inbox.lock();
            s.closed = true;
            s.drain = None;
            (std::mem::take(&mut s.jobs), std::mem::take(&mut s.room))
        };
        // Dropped outside the lock: a job's captures (an ask's reply
        // sender) may wake other tasks.
        drop(jobs);
        for w in room {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Recorder {
        seen: Arc<Mutex<Vec<u32>>>,
    }

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Stop;

    impl Handler<Stop> for Recorder {
        type Result = ();
        fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    /// What a `Recorder` recorded, in order.
    type Seen = Arc<Mutex<Vec<u32>>>;

    /// A `Recorder` with an inbox of `capacity`, and what it records.
    fn recorder(capacity: usize) -> (Addr<Recorder>, Arc<Inbox<Recorder>>, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut inbox = None;
        let addr = Recorder::create(|ctx| {
            inbox = Some(Drain::spawn(ctx, capacity));
            Recorder { seen: s }
        });
        (addr, inbox.expect("created"), seen)
    }

    fn record(n: u32) -> Job<Recorder> {
        Box::new(move |a: &mut Recorder, _| a.seen.lock().unwrap().push(n))
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[actix_rt::test]
    async fn runs_in_order_and_refuses_past_capacity() {
        let (_addr, inbox, seen) = recorder(3);
        for n in 0..3 {
            assert!(inbox.try_push(record(n)).is_ok());
        }
        assert!(matches!(inbox.try_push(record(99)), Err(Refused::Full(_))));
        assert_eq!(inbox.len(), 3);
        settle().await;
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
        // Room again, and the idle drain wakes for the next push.
        assert!(inbox.try_push(record(3)).is_ok());
        settle().await;
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[actix_rt::test]
    async fn a_push_waiting_for_room_goes_in_when_the_actor_catches_up() {
        let (_addr, inbox, seen) = recorder(1);
        assert!(inbox.try_push(record(0)).is_ok());
        assert!(inbox.push_when_room(record(1)).await);
        settle().await;
        assert_eq!(*seen.lock().unwrap(), vec![0, 1]);
    }

    #[actix_rt::test]
    async fn a_stopped_actor_closes_its_inbox_and_drops_what_waited() {
        let (addr, inbox, seen) = recorder(8);
        addr.do_send(Stop);
        settle().await;
        assert!(matches!(inbox.try_push(record(1)), Err(Refused::Closed)));
        assert!(!inbox.push_when_room(record(3)).await);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[actix_rt::test]
    async fn a_waiting_actor_runs_nothing_until_its_future_is_done() {
        let (_addr, inbox, seen) = recorder(8);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Arc::new(Mutex::new(Some(rx)));
        // The first message makes the actor wait on `rx`.
        let r = rx.clone();
        inbox
            .try_push(Box::new(
                move |a: &mut Recorder, ctx: &mut Context<Recorder>| {
                    a.seen.lock().unwrap().push(0);
                    let rx = r.lock().unwrap().take().unwrap();
                    ctx.wait(actix::fut::wrap_future(async move {
                        let _ = rx.await;
                    }));
                },
            ))
            .ok()
            .unwrap();
        assert!(inbox.try_push(record(1)).is_ok());
        settle().await;
        assert_eq!(*seen.lock().unwrap(), vec![0]);
        tx.send(()).unwrap();
        settle().await;
        assert_eq!(*seen.lock().unwrap(), vec![0, 1]);
    }

    /// Makes the actor wait on the future it carries (`ctx.wait`).
    #[derive(Message)]
    #[rtype(result = "()")]
    struct WaitOn(tokio::sync::oneshot::Receiver<()>);

    impl Handler<WaitOn> for Recorder {
        type Result = ();
        fn handle(&mut self, WaitOn(rx): WaitOn, ctx: &mut Context<Self>) {
            ctx.wait(actix::fut::wrap_future(async move {
                let _ = rx.await;
            }));
        }
    }

    #[actix_rt::test]
    async fn a_wait_begun_by_a_mailbox_message_holds_the_inbox_back() {
        let (addr, inbox, seen) = recorder(8);
        settle().await;
        // A local message (the actix mailbox) makes the actor wait, and a
        // remote one is in the inbox: both are there when the actor runs
        // next (actix polls its mailbox, then its spawned futures, in one
        // poll).
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        addr.do_send(WaitOn(rx));
        assert!(inbox.try_push(record(1)).is_ok());
        settle().await;
        assert!(
            seen.lock().unwrap().is_empty(),
            "an inbox message ran while the actor waited"
        );
        tx.send(()).unwrap();
        settle().await;
        assert_eq!(*seen.lock().unwrap(), vec![1]);
    }

    /// Refuses to stop the first time it is asked to.
    struct Stubborn {
        seen: Arc<Mutex<Vec<u32>>>,
        refused: bool,
    }

    impl Actor for Stubborn {
        type Context = Context<Self>;
        fn stopping(&mut self, _: &mut Context<Self>) -> Running {
            if self.refused {
                Running::Stop
            } else {
                self.refused = true;
                Running::Continue
            }
        }
    }

    #[actix_rt::test]
    async fn a_stop_the_actor_refuses_leaves_the_drain_running() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut inbox = None;
        let _addr = Stubborn::create(|ctx| {
            inbox = Some(Drain::spawn(ctx, 8));
            Stubborn {
                seen: s,
                refused: false,
            }
        });
        let inbox = inbox.unwrap();
        let job = |n: u32, stop: bool| -> Job<Stubborn> {
            Box::new(move |a: &mut Stubborn, ctx: &mut Context<Stubborn>| {
                a.seen.lock().unwrap().push(n);
                if stop {
                    ctx.stop();
                }
            })
        };
        assert!(inbox.try_push(job(0, true)).is_ok());
        assert!(inbox.try_push(job(1, false)).is_ok());
        settle().await;
        assert_eq!(*seen.lock().unwrap(), vec![0, 1]);
        assert!(inbox.try_push(job(2, false)).is_ok());
        settle().await;
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
    }

    /// Records how many jobs had run when it was handled.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Mark(Arc<AtomicUsize>, Arc<AtomicUsize>);

    impl Handler<Mark> for Recorder {
        type Result = ();
        fn handle(&mut self, Mark(runs, seen_at): Mark, _: &mut Context<Self>) {
            seen_at.store(runs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    #[actix_rt::test]
    async fn a_long_backlog_lets_the_mailbox_in_between_batches() {
        let runs = Arc::new(AtomicUsize::new(0));
        let seen_at = Arc::new(AtomicUsize::new(usize::MAX));
        let (_addr, inbox, _) = recorder(10_000);
        let total = 3 * DRAIN_BATCH + 1;
        for i in 0..total {
            let r = runs.clone();
            let s = seen_at.clone();
            assert!(inbox
                .try_push(Box::new(
                    move |_: &mut Recorder, ctx: &mut Context<Recorder>| {
                        // The first job puts a message in the actor's mailbox.
                        if i == 0 {
                            ctx.address().do_send(Mark(r.clone(), s));
                        }
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                ))
                .is_ok());
        }
        settle().await;
        assert_eq!(runs.load(Ordering::Relaxed), total);
        // The mailbox got its turn after the first batch, not after all.
        assert_eq!(seen_at.load(Ordering::Relaxed), DRAIN_BATCH);
    }
}
