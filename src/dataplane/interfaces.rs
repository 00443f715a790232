//! The node's pod-IP-to-veth mapping ([`PodInterfaces`]), learned from the kernel's links and
//! routes through rtnetlink in the agent's network namespace.
//!
//! Routed CNIs (kindnet, `ptp`) give each pod a host-side veth and a host route
//! `podIP dev vethXXXX` in the main table (kindnetd does so: kind's
//! `images/kindnetd/cmd/kindnetd/routes.go`); this module turns the kernel's
//! view of links and routes into "which interface leads to which pod IP". It owns that
//! derivation ([`State`], pure and fed with [`Event`]s) and one rtnetlink socket that keeps it
//! current ([`watch`]). It does not know pods or policies. Bridge-based CNIs' pods all sit
//! behind one bridge, so there is nothing per pod to learn; what it learns of them is the
//! addresses the bridge's connected routes cover (without the bridge's own), for
//! `starting_pods` ([`State::bridged_addresses`], [`watch_with_bridges`]).
//!
//! Kernel behaviour the state depends on (seen on 6.18 with `ip monitor`):
//! - IPv4 routes through a link are removed without any `RTM_DELROUTE` when the link is set
//!   down or deleted; only the `RTM_NEWLINK` (flags without `IFF_UP`) or `RTM_DELLINK` tells.
//!   IPv6 sends a `RTM_DELROUTE` for each of its routes.
//! - `ip route replace` sends one `RTM_NEWROUTE` with `NLM_F_REPLACE` and no deletion of the
//!   route it replaced.
//! - `RTM_NEWLINK` arrives on every state change (carrier, flags, peer namespace), each one a
//!   full description of the link.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NLM_F_REPLACE, NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::AsyncSocket as _;
use rtnetlink::{MulticastGroup, RouteMessageBuilder};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Pod IP to the name of the host-side interface that leads to it (`vethXXXX`), for the pods
/// routed through a veth of this node: the compiler's input for anti-spoofing.
pub use crate::model::PodInterfaces;

/// The main routing table (`RT_TABLE_MAIN`): where CNIs put pod routes. The `local` table also
/// holds `/32` routes on every veth (kindnet's gateway address on each one), which must not
/// count.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;
/// The `local` routing table (`RT_TABLE_LOCAL`, 255 in `linux/rtnetlink.h`): a host route per
/// address of the node.
pub const LOCAL_TABLE: u32 = 255;
/// The widest bridge route whose addresses are enumerated (a /20: 4,094 addresses); a wider
/// one is left out of [`State::bridged_addresses`].
pub const MAX_BRIDGED_PREFIX_BITS: u8 = 12;

/// A network interface, as far as the mapping cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The interface name (`IFLA_IFNAME`).
    pub name: String,
    /// Whether it is a veth (`IFLA_LINKINFO` kind `veth`): only veths lead to a single pod.
    pub veth: bool,
    /// Whether it is a bridge (`IFLA_LINKINFO` kind `bridge`): a bridge CNI's pods sit behind
    /// it, none with a route of its own.
    pub bridge: bool,
    /// Whether it is administratively up (`IFF_UP`). Setting a link down removes its IPv4
    /// routes without telling.
    pub up: bool,
}

/// A route, as far as the mapping cares. All fields together identify it, as the kernel's
/// `RTM_DELROUTE` describes the deleted route in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// The routing table (`RTA_TABLE`, else the header's table).
    pub table: u32,
    /// The destination prefix's address.
    pub destination: IpAddr,
    /// The destination prefix's length: 32 (IPv4) or 128 (IPv6) for a host route.
    pub prefix_len: u8,
    /// The type of service selector (IPv4; 0 for IPv6).
    pub tos: u8,
    /// The route's metric (`RTA_PRIORITY`).
    pub metric: u32,
    /// The one output interface of a unicast route; `None` for routes that deliver nowhere
    /// (blackhole, unreachable, ...) or through several next hops (multipath, nexthop objects).
    pub oif: Option<u32>,
}

impl Route {
    /// A unicast route in the main table with metric 0 and no TOS, like `ip route add
    /// DEST/LEN dev IFINDEX` makes (IPv6 would give metric 1024).
    pub fn main(destination: IpAddr, prefix_len: u8, oif: u32) -> Self {
        Self {
            table: MAIN_TABLE,
            destination,
            prefix_len,
            tos: 0,
            metric: 0,
            oif: Some(oif),
        }
    }

    /// Whether this is a host route (`/32`, `/128`) in the main table: the only shape that can
    /// name a pod.
    pub fn is_main_host_route(&self) -> bool {
        let host_len = match self.destination {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        self.table == MAIN_TABLE && self.prefix_len == host_len
    }

    /// Whether this is a main-table IPv4 route wider than a host route through one interface
    /// (a connected subnet, a bridge CNI's pod range, the uplink's subnet).
    pub fn is_main_ipv4_prefix(&self) -> bool {
        self.table == MAIN_TABLE
            && self.destination.is_ipv4()
            && self.prefix_len < 32
            && self.oif.is_some()
    }

    /// Whether this is a local-table IPv4 host route through one interface: an address of the
    /// node on that interface.
    pub fn is_own_ipv4_address(&self) -> bool {
        self.table == LOCAL_TABLE
            && self.destination.is_ipv4()
            && self.prefix_len == 32
            && self.oif.is_some()
    }

    /// What `ip route replace` replaces: everything but the output interface.
    fn replace_key(&self) -> (u32, IpAddr, u8, u8, u32) {
        (
            self.table,
            self.destination,
            self.prefix_len,
            self.tos,
            self.metric,
        )
    }
}

/// One change in the namespace, as rtnetlink reports it (and as dumps replay it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `RTM_NEWLINK`: a link appeared or changed (every state change sends one).
    NewLink {
        /// The interface index: a link's identity (names change).
        index: u32,
        /// The link's current description.
        link: Link,
    },
    /// `RTM_DELLINK`: a link is gone, and with it every route through it.
    DelLink {
        /// The interface index.
        index: u32,
    },
    /// `RTM_NEWROUTE`: a route was added, or replaced one with the same key.
    NewRoute {
        /// The route.
        route: Route,
        /// `NLM_F_REPLACE`: it replaced the routes with the same table, destination, TOS and
        /// metric (whatever their output interface).
        replace: bool,
    },
    /// `RTM_DELROUTE`: a route was deleted.
    DelRoute(Route),
}

/// What is known of the namespace's links and of its routes that could name a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    links: BTreeMap<u32, Link>,
    /// Only main-table host routes; others can never map and are not kept.
    routes: BTreeSet<Route>,
    /// Main-table IPv4 routes wider than a host route, through one interface: a bridge's
    /// connected route covers its pods ([`State::bridged_addresses`]).
    prefixes: BTreeSet<Route>,
    /// Local-table IPv4 host routes through one interface: the node's own addresses (a
    /// bridge's gateway address is no pod's).
    own: BTreeSet<Route>,
}

impl State {
    /// Applies one change. Applying a dump and then every event since the subscription gives
    /// the kernel's current state, as each event restates its object.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::NewLink { index, link } => {
                if !link.up {
                    // IPv4 flushes a down link's routes silently; IPv6 sends RTM_DELROUTEs.
                    self.routes
                        .retain(|r| !(r.oif == Some(index) && r.destination.is_ipv4()));
                    self.prefixes.retain(|r| r.oif != Some(index));
                }
                self.links.insert(index, link);
            }
            Event::DelLink { index } => {
                self.links.remove(&index);
                self.routes.retain(|r| r.oif != Some(index));
                self.prefixes.retain(|r| r.oif != Some(index));
                self.own.retain(|r| r.oif != Some(index));
            }
            Event::NewRoute { route, replace } => {
                let routes = if route.is_main_host_route() {
                    &mut self.routes
                } else if route.is_main_ipv4_prefix() {
                    &mut self.prefixes
                } else if route.is_own_ipv4_address() {
                    &mut self.own
                } else {
                    return;
                };
                if replace {
                    let key = route.replace_key();
                    routes.retain(|r| r.replace_key() != key);
                }
                routes.insert(route);
            }
            Event::DelRoute(route) => {
                self.routes.remove(&route);
                self.prefixes.remove(&route);
                self.own.remove(&route);
            }
        }
    }

    /// The mapping: every main-table host route whose output interface is a veth maps its
    /// address to that veth. Routes to bridges, the uplink or other non-veth devices, wider
    /// prefixes and other tables map nothing. When one address has routes to several veths
    /// (a transient state while a CNI moves a pod), the lowest interface index wins, so the
    /// answer does not depend on the order events arrived in.
    pub fn pod_interfaces(&self) -> PodInterfaces {
        let mut chosen: BTreeMap<IpAddr, (u32, &str)> = BTreeMap::new();
        for route in &self.routes {
            let Some(oif) = route.oif else { continue };
            let Some(link) = self.links.get(&oif).filter(|l| l.veth) else {
                continue;
            };
            chosen
                .entry(route.destination)
                .and_modify(|c| {
                    if oif < c.0 {
                        *c = (oif, &link.name);
                    }
                })
                .or_insert((oif, &link.name));
        }
        chosen
            .into_iter()
            .map(|(ip, (_, name))| (ip, name.to_owned()))
            .collect()
    }
    /// The addresses behind the node's bridges, for bridge CNIs (flannel's `cni0`): every
    /// address of each main-table IPv4 route through an up bridge (its connected route,
    /// `10.244.1.0/24 dev cni0`), without the prefix's network and broadcast addresses and
    /// the bridge's own addresses (local-table routes through it). No route names a pod
    /// there, so this is what can be said: whoever sends from one of these addresses is
    /// behind the bridge. Routes wider than a /20 ([`MAX_BRIDGED_PREFIX_BITS`]) are left out.
    pub fn bridged_addresses(&self) -> Vec<IpAddr> {
        let mut addresses = Vec::new();
        for route in &self.prefixes {
            let (Some(oif), IpAddr::V4(network)) = (route.oif, route.destination) else {
                continue;
            };
            let bridge_up = self.links.get(&oif).is_some_and(|l| l.bridge && l.up);
            let host_bits = 32u8.saturating_sub(route.prefix_len);
            if !bridge_up || !(2..=MAX_BRIDGED_PREFIX_BITS).contains(&host_bits) {
                continue;
            }
            let first = u32::from(network) & (u32::MAX << host_bits);
            let own = |ip: IpAddr| {
                self.own
                    .iter()
                    .any(|r| r.oif == Some(oif) && r.destination == ip)
            };
            for host in 1..(1u32 << host_bits) - 1 {
                let ip = IpAddr::V4(Ipv4Addr::from(first + host));
                if !own(ip) {
                    addresses.push(ip);
                }
            }
        }
        addresses.sort();
        addresses.dedup();
        addresses
    }
}

// --- From rtnetlink messages ------------------------------------------------------------------

/// The event a link or route message stands for; `None` for other messages and for links and
/// routes the mapping cannot use (no name, not IPv4 or IPv6).
pub fn event_from_message(message: &RouteNetlinkMessage, flags: u16) -> Option<Event> {
    match message {
        RouteNetlinkMessage::NewLink(m) => {
            let (index, link) = link_from_message(m)?;
            Some(Event::NewLink { index, link })
        }
        RouteNetlinkMessage::DelLink(m) => Some(Event::DelLink {
            index: m.header.index,
        }),
        RouteNetlinkMessage::NewRoute(m) => Some(Event::NewRoute {
            route: route_from_message(m)?,
            replace: flags & NLM_F_REPLACE != 0,
        }),
        RouteNetlinkMessage::DelRoute(m) => Some(Event::DelRoute(route_from_message(m)?)),
        _ => None,
    }
}

fn link_from_message(message: &LinkMessage) -> Option<(u32, Link)> {
    let mut name = None;
    let mut veth = false;
    let mut bridge = false;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::LinkInfo(infos) => {
                veth |= infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                bridge |= infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)));
            }
            _ => {}
        }
    }
    let link = Link {
        name: name?,
        veth,
        bridge,
        up: message.header.flags.contains(LinkFlags::Up),
    };
    Some((message.header.index, link))
}

fn route_from_message(message: &RouteMessage) -> Option<Route> {
    let header = &message.header;
    let mut destination = match header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut table = u32::from(header.table);
    let mut metric = 0;
    let mut oif = None;
    let mut multipath = false;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => destination = IpAddr::V4(*a),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => destination = IpAddr::V6(*a),
            // Header tables are 8 bits; RTA_TABLE carries the real id (above 255 too).
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(_) | RouteAttribute::NhId(_) => multipath = true,
            _ => {}
        }
    }
    // A local route (`local 10.244.1.1 dev cni0 table local`) keeps its interface: it says
    // which interface an address of the node is on.
    if !matches!(header.kind, RouteType::Unicast | RouteType::Local) || multipath {
        oif = None;
    }
    Some(Route {
        table,
        destination,
        prefix_len: header.destination_prefix_length,
        tos: header.tos,
        metric,
        oif,
    })
}

// --- Live: the rtnetlink socket ---------------------------------------------------------------

/// The receive buffer asked for (SO_RCVBUF, capped by `net.core.rmem_max`): room for a burst
/// of pod churn before the kernel drops notifications (which costs a re-dump).
const RECEIVE_BUFFER_BYTES: usize = 4 << 20;
/// The first delay before reopening a failed connection; it doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay before reopening a failed connection.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps `tx` equal to the pod-IP-to-veth mapping of the calling thread's network namespace,
/// until every receiver is dropped.
///
/// Subscribes to link and route notifications first, then dumps links and routes, then applies
/// notifications as they come; the mapping is sent only when it changed, except the first
/// complete one, which is always sent (so a receiver's `changed()` resolving means "synced",
/// even on a node without pods). A message that is not understood is logged and skipped; one
/// that cannot be decoded is skipped by netlink-proto's codec, which logs it through the `log`
/// crate (not `tracing`). When the connection fails, or the kernel dropped notifications (receive
/// buffer overrun), it reopens after a backoff (100 ms doubling to 30 s, reset by a successful
/// dump) and dumps again; it never gives up, hence no error to return.
///
/// The socket lives in the network namespace of the thread that polls this future at first;
/// the agent runs in the node's namespace (hostNetwork).
pub async fn watch(tx: watch::Sender<PodInterfaces>) {
    watch_with_bridges(tx, None).await;
}

/// [`watch`], and keeps `bridged` (when given) equal to [`State::bridged_addresses`]: the
/// addresses behind the node's bridges, sent when they change.
pub async fn watch_with_bridges(
    tx: watch::Sender<PodInterfaces>,
    bridged: Option<watch::Sender<Vec<IpAddr>>>,
) {
    let mut synced = false;
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let error = tokio::select! {
            () = tx.closed() => return,
            result = session(&tx, bridged.as_ref(), &mut synced, &mut backoff) => {
                let Err(error) = result;
                error
            }
        };
        warn!(
            error = format!("{error:#}"),
            retry_ms = backoff.as_millis(),
            "rtnetlink watch of links and routes failed; reopening"
        );
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: subscribe, dump, follow. Returns only on failure.
async fn session(
    tx: &watch::Sender<PodInterfaces>,
    bridged: Option<&watch::Sender<Vec<IpAddr>>>,
    synced: &mut bool,
    backoff: &mut Duration,
) -> anyhow::Result<Infallible> {
    let (mut connection, handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])
    .context("cannot open an rtnetlink socket subscribed to links and routes")?;
    if let Err(error) = connection
        .socket_mut()
        .socket_ref()
        .set_rx_buf_sz(RECEIVE_BUFFER_BYTES)
    {
        warn!(%error, "cannot enlarge the rtnetlink receive buffer; keeping the default");
    }
    let _connection = AbortOnDrop(tokio::spawn(connection));

    // Notifications queue in `messages` while we dump: the subscription came first, so
    // replaying them on top of the dump misses nothing.
    let mut state = State::default();
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await.context("cannot list links")? {
        apply(&mut state, &RouteNetlinkMessage::NewLink(link), 0);
    }
    for (family, request) in [
        ("IPv4", RouteMessageBuilder::<Ipv4Addr>::new().build()),
        ("IPv6", RouteMessageBuilder::<Ipv6Addr>::new().build()),
    ] {
        // Without NETLINK_GET_STRICT_CHK the kernel ignores the header's table and dumps all
        // tables; `State` keeps only what can map.
        let mut routes = handle.route().get(request).execute();
        while let Some(route) = routes
            .try_next()
            .await
            .with_context(|| format!("cannot list {family} routes"))?
        {
            apply(&mut state, &RouteNetlinkMessage::NewRoute(route), 0);
        }
    }
    publish(tx, bridged, &state, !*synced);
    if !*synced {
        info!(
            pods = tx.borrow().len(),
            "pod interfaces synced from links and routes"
        );
    }
    *synced = true;
    *backoff = INITIAL_BACKOFF;

    loop {
        let Some(first) = messages.next().await else {
            bail!("the rtnetlink connection closed");
        };
        // Apply everything already queued before deriving the mapping once.
        let mut next = Some(first);
        while let Some((message, _)) = next {
            handle_message(&mut state, message)?;
            next = messages.next().now_or_never().flatten();
        }
        publish(tx, bridged, &state, false);
    }
}

/// Applies one notification; fails only when the state can no longer be trusted.
fn handle_message(
    state: &mut State,
    message: NetlinkMessage<RouteNetlinkMessage>,
) -> anyhow::Result<()> {
    let flags = message.header.flags;
    match message.payload {
        NetlinkPayload::InnerMessage(inner) => apply(state, &inner, flags),
        // ENOBUFS on a multicast socket, reported by netlink-proto as an overrun: some
        // notifications are lost, only a new dump can tell which.
        NetlinkPayload::Overrun(_) => {
            bail!("the kernel dropped link or route notifications (receive buffer overrun)")
        }
        NetlinkPayload::Error(error) => warn!(%error, "rtnetlink sent an error unasked; ignored"),
        other => debug!(message = ?other, "unexpected rtnetlink message; ignored"),
    }
    Ok(())
}

fn apply(state: &mut State, message: &RouteNetlinkMessage, flags: u16) {
    match event_from_message(message, flags) {
        Some(event) => state.apply(event),
        None => debug!(kind = ?message.message_type(), "rtnetlink message ignored"),
    }
}

/// Sends the state's mapping when it differs from the last one sent (or always, with `force`).
fn publish(
    tx: &watch::Sender<PodInterfaces>,
    bridged: Option<&watch::Sender<Vec<IpAddr>>>,
    state: &State,
    force: bool,
) {
    if let Some(bridged) = bridged {
        // Before the mapping: a receiver woken by the mapping's first send finds both.
        let next = state.bridged_addresses();
        bridged.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            debug!(addresses = next.len(), "addresses behind bridges changed");
            *current = next;
            true
        });
    }
    let next = state.pod_interfaces();
    tx.send_if_modified(|current| {
        if !force && *current == next {
            return false;
        }
        debug!(pods = next.len(), "pod interfaces changed");
        *current = next;
        true
    });
}

/// Stops the connection task when the session ends, whichever way.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn veth(name: &str) -> Link {
        Link {
            name: name.into(),
            veth: true,
            bridge: false,
            up: true,
        }
    }

    fn new_link(index: u32, link: Link) -> Event {
        Event::NewLink { index, link }
    }

    fn add(route: Route) -> Event {
        Event::NewRoute {
            route,
            replace: false,
        }
    }

    fn state(events: impl IntoIterator<Item = Event>) -> State {
        let mut state = State::default();
        for event in events {
            state.apply(event);
        }
        state
    }

    fn mapping(pairs: &[(&str, &str)]) -> PodInterfaces {
        pairs
            .iter()
            .map(|(addr, name)| (ip(addr), (*name).to_owned()))
            .collect()
    }

    #[test]
    fn host_route_to_a_veth_maps_the_ip_to_the_veth() {
        let s = state([
            new_link(5, veth("veth1")),
            add(Route::main(ip("10.244.1.5"), 32, 5)),
        ]);
        assert_eq!(s.pod_interfaces(), mapping(&[("10.244.1.5", "veth1")]));
    }

    #[test]
    fn ipv6_host_route_to_a_veth_maps() {
        let s = state([
            new_link(5, veth("veth1")),
            add(Route::main(ip("fd00:10:244:1::5"), 128, 5)),
            // A /128 as IPv4 prefix length is not a host route for IPv6.
            add(Route::main(ip("fd00:10:244:1::6"), 32, 5)),
        ]);
        assert_eq!(
            s.pod_interfaces(),
            mapping(&[("fd00:10:244:1::5", "veth1")])
        );
    }

    #[test]
    fn routes_to_a_bridge_or_the_uplink_map_nothing() {
        let bridge = Link {
            name: "cni0".into(),
            veth: false,
            bridge: true,
            up: true,
        };
        let uplink = Link {
            name: "eth0".into(),
            bridge: false,
            ..bridge.clone()
        };
        let s = state([
            new_link(2, uplink),
            new_link(3, bridge),
            add(Route::main(ip("10.244.1.5"), 32, 3)),
            add(Route::main(ip("172.18.0.3"), 32, 2)),
        ]);
        assert_eq!(s.pod_interfaces(), PodInterfaces::new());
    }

    fn cni0() -> Link {
        Link {
            name: "cni0".into(),
            veth: false,
            bridge: true,
            up: true,
        }
    }

    fn own(address: &str, oif: u32) -> Route {
        Route {
            table: LOCAL_TABLE,
            ..Route::main(ip(address), 32, oif)
        }
    }

    #[test]
    fn a_bridge_route_covers_its_addresses_but_the_bridges_own() {
        let s = state([
            new_link(
                2,
                Link {
                    bridge: false,
                    ..cni0()
                },
            ),
            new_link(3, cni0()),
            add(Route::main(ip("10.244.1.0"), 29, 3)),
            add(own("10.244.1.1", 3)),
            // The uplink's subnet and the node's address on it are no pod's.
            add(Route::main(ip("172.18.0.0"), 16, 2)),
            add(own("172.18.0.3", 2)),
        ]);
        let expected: Vec<IpAddr> = (2..=6).map(|i| ip(&format!("10.244.1.{i}"))).collect();
        assert_eq!(s.bridged_addresses(), expected);
        assert_eq!(s.pod_interfaces(), PodInterfaces::new());
    }

    #[test]
    fn bridged_addresses_go_with_the_bridge_or_its_route() {
        let prefix = Route::main(ip("10.244.1.0"), 30, 3);
        let mut s = state([new_link(3, cni0()), add(prefix)]);
        assert_eq!(s.bridged_addresses(), [ip("10.244.1.1"), ip("10.244.1.2")]);
        s.apply(new_link(
            3,
            Link {
                up: false,
                ..cni0()
            },
        ));
        assert_eq!(s.bridged_addresses(), Vec::<IpAddr>::new());
        s.apply(new_link(3, cni0()));
        s.apply(add(prefix));
        s.apply(Event::DelRoute(prefix));
        assert_eq!(s.bridged_addresses(), Vec::<IpAddr>::new());
        s.apply(add(prefix));
        s.apply(Event::DelLink { index: 3 });
        assert_eq!(s.bridged_addresses(), Vec::<IpAddr>::new());
        // Wider than a /20: left out rather than enumerated.
        let s = state([
            new_link(3, cni0()),
            add(Route::main(ip("10.244.0.0"), 16, 3)),
        ]);
        assert_eq!(s.bridged_addresses(), Vec::<IpAddr>::new());
    }

    #[test]
    fn wider_prefixes_map_nothing() {
        let s = state([
            new_link(5, veth("veth1")),
            add(Route::main(ip("10.244.1.0"), 24, 5)),
            add(Route::main(ip("fd00::"), 64, 5)),
        ]);
        assert_eq!(s.pod_interfaces(), PodInterfaces::new());
    }

    #[test]
    fn routes_in_other_tables_map_nothing() {
        // kindnet's gateway address on every veth makes `local 10.244.1.1 dev vethX table
        // local`: a /32 on a veth that is not a pod.
        let local = Route {
            table: 255,
            ..Route::main(ip("10.244.1.1"), 32, 5)
        };
        let s = state([new_link(5, veth("veth1")), add(local)]);
        assert_eq!(s.pod_interfaces(), PodInterfaces::new());
    }

    #[test]
    fn routes_without_one_output_interface_map_nothing() {
        let blackhole = Route {
            oif: None,
            ..Route::main(ip("10.244.1.5"), 32, 5)
        };
        let s = state([new_link(5, veth("veth1")), add(blackhole)]);
        assert_eq!(s.pod_interfaces(), PodInterfaces::new());
    }

    #[test]
    fn deleted_route_unmaps_the_ip() {
        let route = Route::main(ip("10.244.1.5"), 32, 5);
        let s = state([
            new_link(5, veth("veth1")),
            add(route),
            add(Route::main(ip("10.244.1.6"), 32, 5)),
            Event::DelRoute(route),
        ]);
        assert_eq!(s.pod_interfaces(), mapping(&[("10.244.1.6", "veth1")]));
    }

    #[test]
    fn deleted_link_unmaps_its_routes_although_ipv4_sends_no_route_deletion() {
        let s = state([
            new_link(5, veth("veth1")),
            new_link(6, veth("veth2")),
            add(Route::main(ip("10.244.1.5"), 32, 5)),
            add(Route::main(ip("fd00::5"), 128, 5)),
            add(Route::main(ip("10.244.1.6"), 32, 6)),
            Event::DelLink { index: 5 },
        ]);
        assert_eq!(s.pod_interfaces(), mapping(&[("10.244.1.6", "veth2")]));
        // A link that comes back with the same index does not bring the routes back.
        let mut s = s;
        s.apply(new_link(5, veth("veth1")));
        assert_eq!(s.pod_interfaces(), mapping(&[("10.244.1.6", "veth2")]));
    }

    #[test]
    fn link_set_down_drops_its_ipv4_routes_and_keeps_ipv6_until_deleted() {
        let down = Link {
            up: false,
            ..veth("veth1")
        };
        let v6 = Route::main(ip("fd00::5"), 128, 5);
        let mut s = state([
            new_link(5, veth("veth1")),
            add(Route::main(ip("10.244.1.5"), 32, 5)),
            add(v6),
            new_link(5, down),
        ]);
        assert_eq!(s.pod_interfaces(), mapping(&[("fd00::5", "veth1")]));
        s.apply(Event::DelRoute(v6));
        assert_eq!(s.pod_interfaces(), PodInterfaces::new());
    }

    #[test]
    fn renamed_link_maps_under_its_new_name() {
        let s = state([
            new_link(5, veth("veth1")),
            add(Route::main(ip("10.244.1.5"), 32, 5)),
            new_link(5, veth("vethrenamed")),
        ]);
        assert_eq!(
            s.pod_interfaces(),
            mapping(&[("10.244.1.5", "vethrenamed")])
        );
    }

    #[test]
    fn route_before_its_link_maps_once_the_link_is_known() {
        let mut s = state([add(Route::main(ip("10.244.1.5"), 32, 5))]);
        assert_eq!(s.pod_interfaces(), PodInterfaces::new());
        s.apply(new_link(5, veth("veth1")));
        assert_eq!(s.pod_interfaces(), mapping(&[("10.244.1.5", "veth1")]));
    }

    #[test]
    fn ip_routed_to_two_veths_maps_to_the_lowest_ifindex() {
        let ip = ip("10.244.1.5");
        let events = [
            new_link(9, veth("veth9")),
            new_link(7, veth("veth7")),
            add(Route::main(ip, 32, 9)),
            add(Route {
                metric: 10,
                ..Route::main(ip, 32, 7)
            }),
        ];
        let mut reversed = events.clone();
        reversed.reverse();
        for s in [state(events), state(reversed)] {
            assert_eq!(s.pod_interfaces(), mapping(&[("10.244.1.5", "veth7")]));
        }
    }

    #[test]
    fn replacing_a_route_moves_the_ip_to_the_new_veth() {
        let s = state([
            new_link(5, veth("veth1")),
            new_link(6, veth("veth2")),
            add(Route::main(ip("10.244.1.5"), 32, 5)),
            Event::NewRoute {
                route: Route::main(ip("10.244.1.5"), 32, 6),
                replace: true,
            },
        ]);
        assert_eq!(s.pod_interfaces(), mapping(&[("10.244.1.5", "veth2")]));
    }

    #[test]
    fn replacing_a_route_with_a_blackhole_unmaps_the_ip() {
        let route = Route::main(ip("10.244.1.5"), 32, 5);
        let s = state([
            new_link(5, veth("veth1")),
            add(route),
            Event::NewRoute {
                route: Route { oif: None, ..route },
                replace: true,
            },
        ]);
        assert_eq!(s.pod_interfaces(), PodInterfaces::new());
    }

    #[test]
    fn link_message_is_a_veth_when_its_linkinfo_kind_says_so() {
        let mut message = LinkMessage::default();
        message.header.index = 7;
        message.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        message.attributes = vec![
            LinkAttribute::IfName("veth7".into()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let event = event_from_message(&RouteNetlinkMessage::NewLink(message.clone()), 0);
        assert_eq!(event, Some(new_link(7, veth("veth7"))));

        message.header.flags = LinkFlags::Broadcast;
        message.attributes[1] = LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]);
        let event = event_from_message(&RouteNetlinkMessage::NewLink(message.clone()), 0);
        let bridge = Link {
            name: "veth7".into(),
            veth: false,
            bridge: true,
            up: false,
        };
        assert_eq!(event, Some(new_link(7, bridge)));

        // A link message without a name cannot map anything.
        message.attributes.remove(0);
        assert_eq!(
            event_from_message(&RouteNetlinkMessage::NewLink(message), 0),
            None
        );
    }

    #[test]
    fn route_message_decodes_table_metric_oif_and_replace() {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet6;
        message.header.destination_prefix_length = 128;
        message.header.table = 252; // RT_TABLE_COMPAT: the real id is in RTA_TABLE.
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet6("fd00::5".parse().unwrap())),
            RouteAttribute::Table(MAIN_TABLE),
            RouteAttribute::Priority(1024),
            RouteAttribute::Oif(5),
        ];
        let route = Route {
            metric: 1024,
            ..Route::main(ip("fd00::5"), 128, 5)
        };
        let event = event_from_message(&RouteNetlinkMessage::NewRoute(message.clone()), 0);
        assert_eq!(
            event,
            Some(Event::NewRoute {
                route,
                replace: false
            })
        );
        let event = event_from_message(
            &RouteNetlinkMessage::NewRoute(message.clone()),
            NLM_F_REPLACE,
        );
        assert_eq!(
            event,
            Some(Event::NewRoute {
                route,
                replace: true
            })
        );

        message.header.kind = RouteType::BlackHole;
        let event = event_from_message(&RouteNetlinkMessage::DelRoute(message), 0);
        assert_eq!(event, Some(Event::DelRoute(Route { oif: None, ..route })));
    }

    #[test]
    fn route_message_without_destination_is_the_default_route() {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.kind = RouteType::Unicast;
        message.attributes = vec![RouteAttribute::Oif(2)];
        let event = event_from_message(&RouteNetlinkMessage::NewRoute(message), 0);
        assert_eq!(event, Some(add(Route::main(ip("0.0.0.0"), 0, 2))));
    }
}
