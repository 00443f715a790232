//! The flow window's memory stays bounded under a flood of distinct flows: measured with a
//! counting allocator, the bytes the window holds once full do not grow while 200,000 more
//! distinct flows go through it (each evicting the least recently seen).
//!
//! A test binary of its own, because the allocator counts every allocation of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use kube_nftpol_core::flow_line::{Action, AllowedBy, FlowLine, Peer, PodInfo};
use kube_nftpol_core::flows::Window;
use kube_nftpol_core::model::{Direction, IpProtocol, Owner};

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments, so it
// upholds GlobalAlloc's contract as System does; the counter is only arithmetic on the side.
#[expect(unsafe_code, reason = "a global allocator is an unsafe trait")]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr was allocated by System with this layout (alloc and realloc above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's pointer, layout and size, as GlobalAlloc::realloc requires.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn pod(namespace: &str, name: String) -> PodInfo {
    PodInfo {
        namespace: namespace.to_owned(),
        labels: [
            ("app.kubernetes.io/name", "checkout"),
            ("app.kubernetes.io/instance", "checkout-prod"),
            ("app.kubernetes.io/component", "api"),
            ("pod-template-hash", "5c8b6d7f9"),
            ("team", "payments"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        owner: Some(Owner {
            kind: "ReplicaSet".to_owned(),
            name: "checkout-5c8b6d7f9".to_owned(),
        }),
        name,
        unknown: false,
    }
}

/// The `n`th distinct flow: an allowed flow between two labelled pods, or a denied one to an
/// address, as observe mode logs them.
fn flow(n: u32) -> FlowLine {
    let allowed = n.is_multiple_of(2);
    let peer = if allowed {
        Peer::Pod(pod("shop", format!("backend-5c8b6d7f9-{:05}", n % 100_000)))
    } else {
        Peer::External {
            ip: IpAddr::V4(Ipv4Addr::from(0xc633_6400_u32.wrapping_add(n))),
        }
    };
    FlowLine {
        ts: "2026-11-23T13:47:44.351Z".to_owned(),
        action: if allowed { Action::Allow } else { Action::Deny },
        direction: Direction::Egress,
        pod: pod("payments", format!("checkout-5c8b6d7f9-{:05}", n % 977)),
        peer,
        protocol: IpProtocol::Tcp,
        port: Some(u16::try_from(n % 60_000).unwrap() + 1024),
        source_port: Some(40000),
        source: Some("10.244.1.20".parse().unwrap()),
        destination: Some("10.244.2.11".parse().unwrap()),
        policies: vec![
            "payments/allow-dns".to_owned(),
            "payments/default-deny-all".to_owned(),
        ],
        allowed_by: allowed.then(|| AllowedBy {
            policy: "payments/allow-backend".to_owned(),
            rule: 0,
        }),
        tier: None,
        cluster_policy: None,
        count: 1,
        first_ts: None,
        last_ts: None,
    }
}

#[test]
fn a_flood_of_distinct_flows_leaves_the_window_as_large_as_when_it_filled() {
    const CAPACITY: u32 = 4096;
    let before = LIVE.load(Ordering::Relaxed);
    let mut window = Window::new(CAPACITY as usize);
    for n in 0..CAPACITY {
        window.record(flow(n));
    }
    let full = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    for n in CAPACITY..200_000 {
        window.record(flow(n));
    }
    let flooded = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    assert_eq!(window.len(), CAPACITY as usize);
    assert_eq!(window.evicted(), u64::from(200_000 - CAPACITY));
    let per_flow = full / CAPACITY as usize;
    eprintln!("full: {full} bytes ({per_flow} a flow); after the flood: {flooded} bytes");
    // Tree nodes fill differently as keys come and go: a few percent either way.
    assert!(
        flooded <= full + full / 10,
        "the window grew from {full} to {flooded} bytes under the flood"
    );
    // A labelled flow costs about 2 KiB here (two pods' labels, the key's names twice).
    assert!(per_flow < 4096, "{per_flow} bytes a flow");
    drop(window);
    let left = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        left < full / 100,
        "{left} bytes still allocated after the drop"
    );
}
