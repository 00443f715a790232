//! The dedup table driven by an injected clock: every `at(s)` is `s` seconds after a fixed
//! start, on both the monotonic and the wall clock. Nothing sleeps.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use super::*;

const WINDOW: Duration = Duration::from_secs(10);

/// A clock the tests move by hand.
struct Clock {
    start: Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    fn at(&self, seconds: f64) -> (Instant, SystemTime) {
        let offset = Duration::from_secs_f64(seconds);
        (self.start + offset, wall(seconds))
    }
}

fn wall(seconds: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_secs_f64(seconds)
}

/// Expires, then observes, at `seconds`, as the agent does.
fn see<K: Clone + Eq + Hash>(
    dedup: &mut Dedup<K>,
    clock: &Clock,
    key: &K,
    seconds: f64,
) -> (Vec<Summary<K>>, Seen) {
    let (now, wall) = clock.at(seconds);
    let summaries = dedup.expire(now);
    (summaries, dedup.observe(key, now, wall))
}

fn packet(source_port: u16, destination_port: u16) -> LoggedPacket {
    LoggedPacket {
        direction: Direction::Ingress,
        pod: ObjectKey::new("shop", "backend-0"),
        source: "10.244.1.20".parse().unwrap(),
        destination: "10.244.1.11".parse().unwrap(),
        protocol: IpProtocol::Tcp,
        source_port: Some(source_port),
        destination_port: Some(destination_port),
        kind: crate::compile::LogKind::Denied,
    }
}

#[test]
fn the_first_packet_is_logged_at_once_and_repeats_are_summarized_when_the_window_closes() {
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 100);
    assert_eq!(see(&mut dedup, &clock, &"a", 0.0), (vec![], Seen::New));
    assert_eq!(see(&mut dedup, &clock, &"a", 1.5), (vec![], Seen::Repeat));
    assert_eq!(see(&mut dedup, &clock, &"a", 4.0), (vec![], Seen::Repeat));
    assert_eq!(see(&mut dedup, &clock, &"a", 9.9), (vec![], Seen::Repeat));
    assert_eq!(dedup.next_deadline(), Some(clock.at(10.0).0));

    assert_eq!(dedup.expire(clock.at(9.99).0), vec![]);
    assert_eq!(
        dedup.expire(clock.at(10.0).0),
        vec![Summary {
            key: "a",
            count: 3,
            first: wall(1.5),
            last: wall(9.9),
        }]
    );
}

#[test]
fn a_flow_without_repeats_is_forgotten_silently_and_logged_again_later() {
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 100);
    assert_eq!(see(&mut dedup, &clock, &"a", 0.0).1, Seen::New);
    assert_eq!(dedup.expire(clock.at(10.0).0), vec![]);
    assert!(dedup.is_empty());
    assert_eq!(dedup.next_deadline(), None);
    assert_eq!(see(&mut dedup, &clock, &"a", 12.0).1, Seen::New);
}

#[test]
fn a_steady_flow_costs_one_line_per_window_until_it_stops() {
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 100);
    let mut lines = 0;
    let mut counted = 0;
    // One packet every 100 ms for 35 s, then silence.
    for tenth in 0..350 {
        let (summaries, seen) = see(&mut dedup, &clock, &"a", f64::from(tenth) / 10.0);
        lines += summaries.len();
        counted += summaries.iter().map(|s| s.count).sum::<u64>();
        if seen == Seen::New {
            lines += 1;
            counted += 1;
        }
    }
    let tail = dedup.expire(clock.at(60.0).0);
    lines += tail.len();
    counted += tail.iter().map(|s| s.count).sum::<u64>();
    // The first packet, then one summary per window: at 10, 20, 30 and (the last 4.9 s) 40.
    assert_eq!(lines, 5);
    assert_eq!(counted, 350, "every packet is in exactly one line");
    assert!(dedup.is_empty());
}

#[test]
fn windows_follow_the_first_packet_not_the_last() {
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 100);
    see(&mut dedup, &clock, &"a", 0.0);
    see(&mut dedup, &clock, &"a", 9.0);
    let summaries = dedup.expire(clock.at(10.0).0);
    assert_eq!(summaries.len(), 1);
    // The next window runs from 10 to 20, whatever the last packet's time.
    assert_eq!(dedup.next_deadline(), Some(clock.at(20.0).0));
    assert_eq!(see(&mut dedup, &clock, &"a", 19.0).1, Seen::Repeat);
    let summaries = dedup.expire(clock.at(20.0).0);
    assert_eq!(summaries[0].count, 1);
    assert_eq!(
        (summaries[0].first, summaries[0].last),
        (wall(19.0), wall(19.0))
    );
}

#[test]
fn source_ports_do_not_split_a_flow() {
    let a = FlowKey::of(&packet(40000, 9090));
    let b = FlowKey::of(&packet(51234, 9090));
    assert_eq!(a, b);
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 100);
    assert_eq!(see(&mut dedup, &clock, &a, 0.0).1, Seen::New);
    assert_eq!(see(&mut dedup, &clock, &b, 0.5).1, Seen::Repeat);
    assert_eq!(dedup.len(), 1);
    assert_eq!(a.packet().source_port, None);
    assert_eq!(a.packet().destination_port, Some(9090));
}

#[test]
fn everything_else_the_line_says_splits_flows() {
    let base = packet(40000, 9090);
    let mut variants = vec![base.clone()];
    variants.push(LoggedPacket {
        destination_port: Some(9091),
        ..base.clone()
    });
    variants.push(LoggedPacket {
        protocol: IpProtocol::Udp,
        ..base.clone()
    });
    variants.push(LoggedPacket {
        direction: Direction::Egress,
        ..base.clone()
    });
    variants.push(LoggedPacket {
        pod: ObjectKey::new("shop", "backend-1"),
        ..base.clone()
    });
    variants.push(LoggedPacket {
        source: "10.244.1.21".parse::<IpAddr>().unwrap(),
        ..base.clone()
    });
    variants.push(LoggedPacket {
        destination: "10.244.1.12".parse::<IpAddr>().unwrap(),
        ..base.clone()
    });
    variants.push(LoggedPacket {
        destination_port: None,
        ..base
    });
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 100);
    for (i, variant) in variants.iter().enumerate() {
        let seen = see(&mut dedup, &clock, &FlowKey::of(variant), 0.1).1;
        assert_eq!(seen, Seen::New, "variant {i}: {variant:?}");
    }
    assert_eq!(dedup.len(), variants.len());
}

#[test]
fn a_full_table_drops_new_flows_keeps_counting_tracked_ones_and_frees_room_as_windows_close() {
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 2);
    assert_eq!(see(&mut dedup, &clock, &1, 0.0).1, Seen::New);
    assert_eq!(see(&mut dedup, &clock, &2, 1.0).1, Seen::New);
    assert_eq!(see(&mut dedup, &clock, &3, 2.0).1, Seen::TableFull);
    assert_eq!(see(&mut dedup, &clock, &3, 2.5).1, Seen::TableFull);
    assert_eq!(see(&mut dedup, &clock, &1, 3.0).1, Seen::Repeat);
    assert_eq!(dedup.len(), 2);
    // Flow 1 had a repeat, so it keeps its place for another window; flow 2 goes at 11.
    let (summaries, seen) = see(&mut dedup, &clock, &3, 10.5);
    assert_eq!(summaries.len(), 1);
    assert_eq!(seen, Seen::TableFull);
    let (summaries, seen) = see(&mut dedup, &clock, &3, 11.0);
    assert_eq!(summaries, vec![]);
    assert_eq!(seen, Seen::New);
}

#[test]
fn a_flood_of_distinct_flows_never_grows_the_table_past_its_capacity() {
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 10_000);
    let (mut new, mut full) = (0u64, 0u64);
    // A million distinct flows over 100 s (10,000 a second).
    for i in 0..1_000_000u32 {
        match see(&mut dedup, &clock, &i, f64::from(i) / 10_000.0).1 {
            Seen::New => new += 1,
            Seen::TableFull => full += 1,
            Seen::Repeat => panic!("flow {i} seen twice"),
        }
        assert!(dedup.len() <= 10_000);
    }
    assert_eq!(new + full, 1_000_000);
    // At most one table's worth per window: the first 10,000 of each 10 s.
    assert!(new <= 10 * 10_000 + 10_000, "{new}");
    assert!(new >= 9 * 10_000, "{new}");
    assert!(dedup.deadlines.len() <= 10_000);
}

#[test]
fn a_zero_window_logs_every_packet_and_keeps_nothing() {
    let clock = Clock::new();
    let mut dedup = Dedup::new(Duration::ZERO, 10);
    for i in 0..100 {
        assert_eq!(
            see(&mut dedup, &clock, &"a", f64::from(i) / 100.0).1,
            Seen::New
        );
    }
    assert!(dedup.is_empty());
    assert_eq!(dedup.next_deadline(), None);
}

#[test]
fn an_expiry_a_window_late_forgets_the_flow_and_keeps_the_queue_in_order() {
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 100);
    see(&mut dedup, &clock, &"a", 0.0);
    see(&mut dedup, &clock, &"a", 1.0);
    see(&mut dedup, &clock, &"b", 5.0);
    // Nobody called expire until 25 s: a's window closed at 10 (one repeat), its next one at
    // 20 (none); b's at 15 (none).
    let summaries = dedup.expire(clock.at(25.0).0);
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].key, "a");
    assert!(dedup.is_empty());
    assert!(dedup.deadlines.is_empty());
}

#[test]
fn a_clock_that_goes_backwards_cannot_unorder_the_deadlines() {
    let clock = Clock::new();
    let mut dedup = Dedup::new(WINDOW, 100);
    let (later, wall_later) = clock.at(5.0);
    let (earlier, wall_earlier) = clock.at(1.0);
    dedup.observe(&"a", later, wall_later);
    dedup.observe(&"b", earlier, wall_earlier);
    let deadlines: Vec<Instant> = dedup.deadlines.iter().map(|(d, _)| *d).collect();
    assert!(deadlines.is_sorted(), "{deadlines:?}");
    assert_eq!(dedup.expire(clock.at(15.0).0), vec![]);
    assert!(dedup.is_empty());
}
