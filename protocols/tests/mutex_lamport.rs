//! Lamport mutex under seeded chaos: mutual exclusion among accurate-detector
//! grants, a fenced resource, then liveness and fairness once faults stop.

use std::time::Duration;

use troupe_framework::sansio::{Outputs, Protocol};
use troupe_protocols::mutex::lamport::LamportMsg;
use troupe_protocols::mutex::{LamportMutex, MutexConfig, MutexCore, MutexDurable};
use troupe_protocols::testkit::scenarios::{run_mutex, Scenario};
use troupe_protocols::testkit::{check_seeds, ms, NetFaults};

fn make(id: u32, members: Vec<u32>, d: Option<MutexDurable>) -> LamportMutex<u32> {
    LamportMutex::new(id, members, MutexConfig::new("r"), d)
}

#[test]
fn lamport_safe_under_chaos_and_live_after() {
    check_seeds("lamport_safe_under_chaos_and_live_after", 300, |seed| {
        let n = 3 + (seed % 5) as u32;
        let mut sc = Scenario::chaotic(n);
        // Grants under chaos made with an accurate detector: at least 41
        // in every one of these runs when this floor was set.
        sc.min_checked = 15;
        run_mutex(seed, &sc, make).map(|_| ())
    });
}

#[test]
fn lamport_reliable_network_never_refuses_a_token() {
    check_seeds(
        "lamport_reliable_network_never_refuses_a_token",
        50,
        |seed| {
            let mut sc = Scenario::chaotic(5);
            sc.faults = NetFaults {
                loss: 0.0,
                duplicate: 0.0,
                min_delay: ms(1),
                max_delay: ms(20),
            };
            sc.crash_prob = 0.0;
            sc.partition_prob = 0.0;
            sc.chaos_time = Duration::from_secs(10);
            let o = run_mutex(seed, &sc, make)?;
            if o.refused > 0 {
                return Err(format!("{} grants refused without any fault", o.refused));
            }
            Ok(())
        },
    );
}

/// Without FIFO channels an `Ack` can overtake its sender's earlier
/// `Request`; the ack carries the pending request so the receiver still
/// defers to it.
#[test]
fn an_ack_overtaking_its_senders_request_does_not_let_two_enter() {
    let mut n1 = make(
        1,
        vec![1, 2],
        Some(MutexDurable {
            clock: 5,
            ..MutexDurable::default()
        }),
    );
    let mut n2 = make(2, vec![1, 2], None);
    let mut out = Outputs::new();
    n2.request(ms(0), &mut out); // ts 1, its Request to 1 is delayed
    let delayed = out.sends.pop().expect("request to 1");
    let mut out = Outputs::new();
    n1.request(ms(1), &mut out); // ts 6
    let (_, req1) = out.sends.pop().expect("request to 2");
    let mut out = Outputs::new();
    n2.on_message(ms(2), 1, req1, &mut out);
    let (_, ack) = out.sends.pop().expect("ack to 1");
    assert!(matches!(
        ack,
        LamportMsg::Ack {
            pending: Some(1),
            ..
        }
    ));
    let mut out = Outputs::new();
    n1.on_message(ms(3), 2, ack, &mut out);
    assert_eq!(n1.holding(), None, "2's earlier request must go first");
    n1.on_message(ms(4), 2, delayed.1, &mut out);
    let (_, ack1) = out.sends.pop().expect("ack to 2");
    let mut out = Outputs::new();
    n2.on_message(ms(5), 1, ack1, &mut out);
    assert!(n2.holding().is_some());
    assert_eq!(n1.holding(), None);
}

/// A member that restarts forgets the requests it saw, and its clock may be
/// behind the stamp of a request granted while it was down: its first
/// request can be stamped *before* the held one. The holder must not
/// acknowledge it until it leaves, or the restarted member would find its
/// request first in its queue and enter too (found by the long-hold chaos
/// test, seed 30).
#[test]
fn a_holder_does_not_ack_an_earlier_stamped_request_until_it_leaves() {
    use troupe_framework::membership::{MemberEvent, MemberStatus};
    let down = |m: u32| MemberEvent {
        member: m,
        status: MemberStatus::Down,
        at: ms(0),
    };
    let durable = |clock| {
        Some(MutexDurable {
            clock,
            ..MutexDurable::default()
        })
    };
    // 1 requests while 3 is down (a true crash) and enters with 2's ack.
    let mut n1 = make(1, vec![1, 2, 3], durable(20));
    let mut n2 = make(2, vec![1, 2, 3], durable(5));
    let mut out = Outputs::new();
    n1.on_membership(ms(0), down(3), &mut out);
    n2.on_membership(ms(0), down(3), &mut out);
    let mut out = Outputs::new();
    n1.request(ms(1), &mut out);
    let (_, req1) = out.sends.pop().expect("request to 2");
    let mut out = Outputs::new();
    n2.on_message(ms(2), 1, req1, &mut out);
    let (_, ack) = out.sends.pop().expect("ack to 1");
    n1.on_message(ms(3), 2, ack, &mut Outputs::new());
    assert!(n1.holding().is_some(), "1 holds");
    // 3 restarts with an old clock and requests: stamped before 1's request.
    let mut n3 = make(3, vec![1, 2, 3], durable(1));
    let mut out = Outputs::new();
    n3.request(ms(4), &mut out);
    let mut to_3 = Vec::new();
    for (to, m) in out.sends {
        let mut o = Outputs::new();
        match to {
            1 => n1.on_message(ms(5), 3, m, &mut o),
            _ => n2.on_message(ms(5), 3, m, &mut o),
        }
        let from = to;
        to_3.extend(o.sends.into_iter().map(|(_, m)| (from, m)));
    }
    for (from, m) in to_3.drain(..) {
        n3.on_message(ms(6), from, m, &mut Outputs::new());
    }
    assert_eq!(n3.holding(), None, "3 entered while 1 holds");
    // 1 leaves: its release and its ack let 3 in.
    let mut out = Outputs::new();
    n1.release(ms(7), &mut out);
    for (to, m) in out.sends {
        if to == 3 {
            n3.on_message(ms(8), 1, m, &mut Outputs::new());
        }
    }
    assert!(n3.holding().is_some(), "3 enters once 1 left");
}
