//! Asks the kernel's nf_tables directly over netlink the questions that must cost microseconds
//! rather than an `nft` process and a JSON listing:
//!
//! - [`Kernel::generation`]: the ruleset generation, which every commit in the network
//!   namespace bumps by one (`NFT_MSG_GETGEN`). While it stays where it was when the table was
//!   last verified, nobody has changed any table, ours included. Asked every few seconds.
//! - [`Kernel::rule_counters`]: the counters of the agent's table's rules (an `NFT_MSG_GETRULE`
//!   dump filtered to the table), for the flow metrics. Every few seconds.
//! - [`Kernel::table_objects`]: the names of the table's chains, sets and maps (`GETCHAIN` and
//!   `GETSET` dumps), which is all a full replace needs to know of what it replaces. At every
//!   start and repair, where a JSON listing of a 10,000-pod table costs an `nft` process and
//!   its parse.
//!
//! It only reads. Applying scripts and full listings go through `nft` ([`super::nft`]). Each
//! call opens its own socket on a blocking thread (inside a named network namespace when one is
//! given, for tests that drive a simulated node from outside), so nothing is shared and a stuck
//! kernel answer ends at [`RECEIVE_TIMEOUT`].

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NlaBuffer, NlasIterator,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, GenMessage, NfTablesMessage, RuleAttribute, RuleMessage,
    SetAttribute, SetMessage,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, SocketAddr, constants::NETLINK_NETFILTER};

use super::objects::TableObjects;
use crate::compile::TABLE_NAME;

/// How long one call waits for each answer from the kernel.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);

// From `linux/netlink.h`, `linux/netfilter/nfnetlink.h` and `linux/netfilter/nf_tables.h`.
// The answers are read attribute by attribute here rather than through
// netlink-packet-netfilter's message types: its expression parser formats every attribute's
// bytes into an error context whether or not parsing fails, which made a dump of a thousand
// rules cost tens of milliseconds of `Debug` formatting.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// The nf_tables subsystem in the high byte of a message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10 << 8;
const NFT_MSG_NEWCHAIN: u16 = NFNL_SUBSYS_NFTABLES | 3;
const NFT_MSG_NEWRULE: u16 = NFNL_SUBSYS_NFTABLES | 6;
const NFT_MSG_NEWSET: u16 = NFNL_SUBSYS_NFTABLES | 9;
const NFT_MSG_NEWGEN: u16 = NFNL_SUBSYS_NFTABLES | 15;
/// `struct nfgenmsg`, before the attributes of every nf_tables message.
const NFGENMSG_BYTES: usize = 4;
const NFTA_GEN_ID: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
/// `NFT_SET_ANONYMOUS`: a set written inline in a rule (`{ a, b }`), which lives and dies
/// with the rule and is not the table's to delete.
const NFT_SET_ANONYMOUS: u32 = 0x1;
/// `NFT_SET_MAP`: a map (`delete map`, not `delete set`).
const NFT_SET_MAP: u32 = 0x8;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// `NFTNL_UDATA_RULE_COMMENT`: the comment's type in a rule's user data (libnftnl `udata.h`),
/// stored as type, length and the NUL-terminated text.
const USER_DATA_COMMENT: u8 = 0;
/// `ENOENT`, as the kernel answers a dump of a table that does not exist.
const NO_SUCH_ENTRY: i32 = 2;

/// Why the kernel could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be opened, or sending or receiving failed.
    #[error("netlink (nf_tables): {0}")]
    Io(#[from] io::Error),
    /// The network namespace could not be entered.
    #[error("cannot enter network namespace {path}: {source}")]
    Netns {
        /// `/run/netns/NAME`.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The kernel answered with an error code.
    #[error("the kernel refused the request (errno {0})")]
    Refused(i32),
    /// The answer did not parse, or was not the answer to the question.
    #[error("unexpected answer from nf_tables: {0}")]
    Answer(String),
    /// The table changed during the dump (`NLM_F_DUMP_INTR`); asking again gives a consistent one.
    #[error("the table changed during the dump")]
    Interrupted,
    /// The blocking thread ended without an answer (it panicked on the kernel's answer).
    #[error("the netlink reader stopped")]
    Stopped,
}

/// One counted rule of the agent's table as the kernel shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    /// The chain the rule is in.
    pub chain: String,
    /// The rule's handle: unique in the table for the table's life (a rule flushed and added
    /// again gets a new one, and its counter starts from zero).
    pub handle: u64,
    /// The rule's comment (`""` when it has none).
    pub comment: String,
    /// Packets the rule's counter has seen since the rule was added (or its counter reset).
    pub packets: u64,
}

/// Where the questions go: the agent's own network namespace, or a named one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kernel {
    netns: Option<PathBuf>,
}

impl Kernel {
    /// The network namespace the agent runs in.
    pub fn current() -> Self {
        Self::default()
    }

    /// The named network namespace (`/run/netns/NAME`, as `ip netns` creates it).
    pub fn in_netns(name: &str) -> Self {
        Self {
            netns: Some(PathBuf::from("/run/netns").join(name)),
        }
    }

    /// The ruleset generation of the namespace.
    pub async fn generation(&self) -> Result<u32, Error> {
        let request = NfTablesMessage::GetGen(GenMessage { attributes: vec![] });
        let answers = self
            .ask(request, NetfilterProtoFamily::Unspec, false)
            .await?;
        answers
            .iter()
            .filter(|(kind, _)| *kind == NFT_MSG_NEWGEN)
            .find_map(|(_, attributes)| {
                nlas(attributes)
                    .find(|nla| nla.kind() == NFTA_GEN_ID)
                    .and_then(|nla| Some(u32::from_be_bytes(nla.value().try_into().ok()?)))
            })
            .ok_or_else(|| Error::Answer("no generation id".into()))
    }

    /// The counted rules of the agent's table with what they counted; empty when the table
    /// does not exist.
    pub async fn rule_counters(&self) -> Result<Vec<RuleCounter>, Error> {
        let request = NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(TABLE_NAME.into())],
        });
        let answers = match self.ask(request, NetfilterProtoFamily::Inet, true).await {
            Err(Error::Refused(NO_SUCH_ENTRY)) => return Ok(Vec::new()),
            other => other?,
        };
        Ok(answers
            .iter()
            .filter(|(kind, _)| *kind == NFT_MSG_NEWRULE)
            .filter_map(|(_, attributes)| counted_rule(attributes))
            .collect())
    }

    /// The chains, sets and maps of the agent's table; `None` when the table does not exist.
    pub async fn table_objects(&self) -> Result<Option<TableObjects>, Error> {
        let chains = NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![ChainAttribute::Table(TABLE_NAME.into())],
        });
        let sets = NfTablesMessage::GetSet(SetMessage {
            attributes: vec![SetAttribute::Table(TABLE_NAME.into())],
        });
        let (chains, sets) = futures::join!(
            self.ask(chains, NetfilterProtoFamily::Inet, true),
            self.ask(sets, NetfilterProtoFamily::Inet, true)
        );
        let (chains, sets) = match (chains, sets) {
            (Err(Error::Refused(NO_SUCH_ENTRY)), _) | (_, Err(Error::Refused(NO_SUCH_ENTRY))) => {
                return Ok(None);
            }
            (chains, sets) => (chains?, sets?),
        };
        let mut objects = TableObjects::default();
        for (_, attributes) in chains.iter().filter(|(kind, _)| *kind == NFT_MSG_NEWCHAIN) {
            if let Some(name) = named_in_table(attributes, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME) {
                objects.chains.insert(name);
            }
        }
        for (_, attributes) in sets.iter().filter(|(kind, _)| *kind == NFT_MSG_NEWSET) {
            let Some(name) = named_in_table(attributes, NFTA_SET_TABLE, NFTA_SET_NAME) else {
                continue;
            };
            let flags = nlas(attributes)
                .find(|nla| nla.kind() == NFTA_SET_FLAGS)
                .and_then(|nla| Some(u32::from_be_bytes(nla.value().try_into().ok()?)))
                .unwrap_or(0);
            if flags & NFT_SET_ANONYMOUS != 0 {
                continue;
            }
            if flags & NFT_SET_MAP != 0 {
                objects.maps.insert(name);
            } else {
                objects.sets.insert(name);
            }
        }
        // An empty table (no chains, no sets) is as good as none: a full replace has nothing
        // to delete, and its script declares the table either way.
        if objects == TableObjects::default() {
            return Ok(None);
        }
        Ok(Some(objects))
    }

    /// Sends `request` and collects the answer's nf_tables messages (type and attributes), on
    /// a blocking thread.
    async fn ask(
        &self,
        request: NfTablesMessage,
        family: NetfilterProtoFamily,
        dump: bool,
    ) -> Result<Vec<(u16, Vec<u8>)>, Error> {
        let netns = self.netns.clone();
        tokio::task::spawn_blocking(move || {
            let socket = open(netns)?;
            exchange(&socket, request, family, dump)
        })
        .await
        .map_err(|_| Error::Stopped)?
    }
}

/// The attributes in `bytes`, up to the first malformed one.
fn nlas(bytes: &[u8]) -> impl Iterator<Item = NlaBuffer<&[u8]>> {
    NlasIterator::new(bytes).map_while(Result::ok)
}

/// An attribute's value, borrowed from the message rather than from the attribute.
fn value_of(nla: NlaBuffer<&[u8]>) -> &[u8] {
    // The iterator checked 4 <= length <= the bytes it had.
    let length = usize::from(nla.length());
    nla.into_inner().get(4..length).unwrap_or_default()
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// A rule of the dump (its attributes) as a [`RuleCounter`], when it has a counter.
fn counted_rule(attributes: &[u8]) -> Option<RuleCounter> {
    let mut chain = None;
    let mut handle = None;
    let mut comment = String::new();
    let mut packets = None;
    for nla in nlas(attributes) {
        match nla.kind() {
            NFTA_RULE_CHAIN => chain = Some(c_string(nla.value())),
            NFTA_RULE_HANDLE => handle = be_u64(nla.value()),
            NFTA_RULE_USERDATA => comment = user_data_comment(nla.value()).unwrap_or_default(),
            NFTA_RULE_EXPRESSIONS => packets = nlas(nla.value()).find_map(counter_packets),
            _ => {}
        }
    }
    Some(RuleCounter {
        chain: chain?,
        handle: handle?,
        comment,
        packets: packets?,
    })
}

/// The object's name (attribute `name`) when its table (attribute `table`) is the agent's.
fn named_in_table(attributes: &[u8], table: u16, name: u16) -> Option<String> {
    let mut in_table = false;
    let mut found = None;
    for nla in nlas(attributes) {
        if nla.kind() == table {
            in_table = c_string(nla.value()) == TABLE_NAME;
        } else if nla.kind() == name {
            found = Some(c_string(nla.value()));
        }
    }
    found.filter(|_| in_table)
}

/// The packet count of a list element that is a `counter` expression.
fn counter_packets(element: NlaBuffer<&[u8]>) -> Option<u64> {
    if element.kind() != NFTA_LIST_ELEM {
        return None;
    }
    let mut is_counter = false;
    let mut data = None;
    for nla in nlas(element.value()) {
        match nla.kind() {
            NFTA_EXPR_NAME => is_counter = c_string(nla.value()) == "counter",
            NFTA_EXPR_DATA => data = Some(value_of(nla)),
            _ => {}
        }
    }
    nlas(data.filter(|_| is_counter)?)
        .find(|nla| nla.kind() == NFTA_COUNTER_PACKETS)
        .and_then(|nla| be_u64(nla.value()))
}

/// A NUL-terminated string attribute.
fn c_string(bytes: &[u8]) -> String {
    let text = bytes.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

/// The comment in a rule's user data (type-length-value records).
fn user_data_comment(mut data: &[u8]) -> Option<String> {
    while let [kind, length, rest @ ..] = data {
        let value = rest.get(..usize::from(*length))?;
        if *kind == USER_DATA_COMMENT {
            return Some(c_string(value));
        }
        data = rest.get(usize::from(*length)..)?;
    }
    None
}

/// A netfilter socket in `netns` (or the current namespace), connected to the kernel.
fn open(netns: Option<PathBuf>) -> Result<Socket, Error> {
    let Some(path) = netns else {
        return connected_socket();
    };
    // setns(2) changes only the calling thread; a socket keeps the namespace it was made in.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let netns_error = |source| Error::Netns {
                    path: path.clone(),
                    source,
                };
                let file = std::fs::File::open(&path).map_err(netns_error)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|errno| netns_error(errno.into()))?;
                connected_socket()
            })
            .join()
            .map_err(|_| Error::Stopped)?
    })
}

fn connected_socket() -> Result<Socket, Error> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout = nix::sys::time::TimeVal::new(
        i64::try_from(RECEIVE_TIMEOUT.as_secs()).unwrap_or(i64::MAX),
        0,
    );
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
        .map_err(io::Error::from)?;
    Ok(socket)
}

/// Sends one request and reads its answer: one message, or a dump until `NLMSG_DONE`. Each
/// nf_tables message comes back as its type and its attributes.
fn exchange(
    socket: &Socket,
    request: NfTablesMessage,
    family: NetfilterProtoFamily,
    dump: bool,
) -> Result<Vec<(u16, Vec<u8>)>, Error> {
    const SEQUENCE: u32 = 1;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
    header.sequence_number = SEQUENCE;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            request,
        )),
    );
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    socket.send(&bytes, 0)?;

    let mut answers = Vec::new();
    let mut interrupted = false;
    let mut buffer = vec![0; 1 << 16];
    loop {
        let length = socket.recv(&mut &mut buffer[..], 0)?;
        let mut rest = buffer.get(..length).unwrap_or_default();
        if rest.is_empty() {
            return Err(Error::Answer("empty datagram".into()));
        }
        while !rest.is_empty() {
            let message = NetlinkBuffer::new_checked(rest)
                .map_err(|e| Error::Answer(format!("netlink header: {e}")))?;
            // new_checked guarantees 16 <= length <= rest.len().
            let size = message.length() as usize;
            if message.sequence_number() == SEQUENCE {
                interrupted |= message.flags() & NLM_F_DUMP_INTR != 0;
                let payload = message.payload();
                match message.message_type() {
                    NLMSG_DONE => {
                        return if interrupted {
                            Err(Error::Interrupted)
                        } else {
                            Ok(answers)
                        };
                    }
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, i32::from_ne_bytes);
                        return if code == 0 {
                            Ok(answers)
                        } else {
                            Err(Error::Refused(-code))
                        };
                    }
                    kind => {
                        let attributes = payload.get(NFGENMSG_BYTES..).unwrap_or_default();
                        answers.push((kind, attributes.to_vec()));
                        if !dump {
                            return Ok(answers);
                        }
                    }
                }
            }
            // Messages are 4-byte aligned (NLMSG_ALIGN).
            rest = rest.get(size.saturating_add(3) & !3..).unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DefaultNla, Emitable as _};
    use netlink_packet_netfilter::nftables::{ExpressionAttribute, Expressions, ListAttribute};

    /// The attributes of a rule as the kernel sends them (emitted by netlink-packet-netfilter).
    fn emitted(attributes: Vec<RuleAttribute>) -> Vec<u8> {
        let mut bytes = vec![0; attributes.as_slice().buffer_len()];
        attributes.as_slice().emit(&mut bytes);
        bytes
    }

    fn expression(name: &str, attributes: Vec<DefaultNla>) -> ListAttribute<ExpressionAttribute> {
        ListAttribute::Element(vec![
            ExpressionAttribute::Name(name.into()),
            ExpressionAttribute::Data(Expressions::Other {
                expression_type: name.into(),
                attributes,
            }),
        ])
    }

    fn counter(packets: u64) -> ListAttribute<ExpressionAttribute> {
        expression(
            "counter",
            vec![
                DefaultNla::new(1, 4096u64.to_be_bytes().to_vec()),
                DefaultNla::new(NFTA_COUNTER_PACKETS, packets.to_be_bytes().to_vec()),
            ],
        )
    }

    fn comment(text: &str) -> Vec<u8> {
        let mut data = vec![USER_DATA_COMMENT, u8::try_from(text.len() + 1).unwrap()];
        data.extend(text.as_bytes());
        data.push(0);
        data
    }

    #[test]
    fn a_counted_rule_gives_chain_handle_comment_and_packets() {
        let rule = emitted(vec![
            RuleAttribute::Table(TABLE_NAME.into()),
            RuleAttribute::Chain("in_x_a".into()),
            RuleAttribute::Handle(22),
            RuleAttribute::Expressions(vec![
                // Another expression whose data holds an attribute of the counter's type.
                expression(
                    "payload",
                    vec![DefaultNla::new(NFTA_COUNTER_PACKETS, vec![0; 8])],
                ),
                counter(3),
                expression("immediate", vec![]),
            ]),
            RuleAttribute::UserData(comment("x/a-from-y ingress[0]")),
        ]);
        assert_eq!(
            counted_rule(&rule),
            Some(RuleCounter {
                chain: "in_x_a".into(),
                handle: 22,
                comment: "x/a-from-y ingress[0]".into(),
                packets: 3,
            })
        );
    }

    #[test]
    fn a_rule_without_counter_or_chain_is_skipped_and_comment_defaults_to_empty() {
        let without_counter = emitted(vec![
            RuleAttribute::Chain("c".into()),
            RuleAttribute::Handle(1),
            RuleAttribute::Expressions(vec![expression("payload", vec![])]),
        ]);
        assert_eq!(counted_rule(&without_counter), None);
        let without_chain = emitted(vec![
            RuleAttribute::Handle(1),
            RuleAttribute::Expressions(vec![counter(1)]),
        ]);
        assert_eq!(counted_rule(&without_chain), None);
        let without_comment = emitted(vec![
            RuleAttribute::Chain("c".into()),
            RuleAttribute::Handle(5),
            RuleAttribute::Expressions(vec![counter(12)]),
        ]);
        assert_eq!(
            counted_rule(&without_comment).map(|r| (r.comment, r.packets)),
            Some((String::new(), 12))
        );
    }

    #[test]
    fn a_counter_with_a_short_value_is_not_read() {
        let rule = emitted(vec![
            RuleAttribute::Chain("c".into()),
            RuleAttribute::Handle(5),
            RuleAttribute::Expressions(vec![expression(
                "counter",
                vec![DefaultNla::new(NFTA_COUNTER_PACKETS, vec![1, 2])],
            )]),
        ]);
        assert_eq!(counted_rule(&rule), None);
    }

    #[test]
    fn user_data_finds_the_comment_among_other_records_and_survives_garbage() {
        let mut data = vec![1, 2, 0xaa, 0xbb];
        data.extend(comment("p ingress[1]"));
        assert_eq!(user_data_comment(&data).as_deref(), Some("p ingress[1]"));
        assert_eq!(user_data_comment(&[]), None);
        assert_eq!(user_data_comment(&[0, 200, 1]), None);
        assert_eq!(user_data_comment(&[5]), None);
    }

    #[test]
    fn truncated_or_random_attributes_never_panic() {
        let rule = emitted(vec![
            RuleAttribute::Chain("in_x_a".into()),
            RuleAttribute::Handle(22),
            RuleAttribute::Expressions(vec![counter(3)]),
            RuleAttribute::UserData(comment("c")),
        ]);
        for end in 0..rule.len() {
            let _ = counted_rule(&rule[..end]);
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2_000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()[0]
                })
                .collect();
            let _ = counted_rule(&bytes);
        }
    }
}
