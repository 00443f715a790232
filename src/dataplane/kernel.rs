//! Asks the kernel's nf_tables directly over netlink the two questions the agent asks every few
//! seconds, which must cost microseconds rather than an `nft` process and a JSON listing:
//!
//! - [`Kernel::generation`]: the ruleset generation, which every commit in the network
//!   namespace bumps by one (`NFT_MSG_GETGEN`). While it stays where it was when the table was
//!   last verified, nobody has changed any table, ours included.
//! - [`Kernel::rule_counters`]: the counters of the agent's table's rules (an `NFT_MSG_GETRULE`
//!   dump filtered to the table), for the flow metrics.
//!
//! It only reads. Applying scripts and full listings go through `nft` ([`super::nft`]). Each
//! call opens its own socket on a blocking thread (inside a named network namespace when one is
//! given, for tests that drive a simulated node from outside), so nothing is shared and a stuck
//! kernel answer ends at [`RECEIVE_TIMEOUT`].

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, Nla as _,
};
use netlink_packet_netfilter::nftables::{
    ExpressionAttribute, Expressions, GenAttribute, GenMessage, ListAttribute, NfTablesMessage,
    RuleAttribute, RuleMessage,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, SocketAddr, constants::NETLINK_NETFILTER};

use crate::compile::TABLE_NAME;

/// How long one call waits for each answer from the kernel.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// `NFTA_COUNTER_PACKETS` (`linux/netfilter/nf_tables.h`).
const COUNTER_PACKETS: u16 = 2;
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
            .into_iter()
            .find_map(|message| match message {
                NfTablesMessage::NewGen(GenMessage { attributes }) => {
                    attributes.into_iter().find_map(|a| match a {
                        GenAttribute::Id(id) => Some(id),
                        _ => None,
                    })
                }
                _ => None,
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
            .into_iter()
            .filter_map(|message| match message {
                NfTablesMessage::NewRule(rule) => counted_rule(rule),
                _ => None,
            })
            .collect())
    }

    /// Sends `request` and collects the nf_tables messages of the answer, on a blocking thread.
    async fn ask(
        &self,
        request: NfTablesMessage,
        family: NetfilterProtoFamily,
        dump: bool,
    ) -> Result<Vec<NfTablesMessage>, Error> {
        let netns = self.netns.clone();
        tokio::task::spawn_blocking(move || {
            let socket = open(netns)?;
            exchange(&socket, request, family, dump)
        })
        .await
        .map_err(|_| Error::Stopped)?
    }
}

/// A rule of the dump as a [`RuleCounter`], when it has a counter.
fn counted_rule(rule: RuleMessage) -> Option<RuleCounter> {
    let mut chain = None;
    let mut handle = None;
    let mut comment = String::new();
    let mut packets = None;
    for attribute in rule.attributes {
        match attribute {
            RuleAttribute::Chain(name) => chain = Some(name),
            RuleAttribute::Handle(value) => handle = Some(value),
            RuleAttribute::UserData(data) => comment = user_data_comment(&data).unwrap_or_default(),
            RuleAttribute::Expressions(list) => {
                packets = list.iter().find_map(counter_packets);
            }
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

/// The packet count of a `counter` expression.
fn counter_packets(element: &ListAttribute<ExpressionAttribute>) -> Option<u64> {
    let ListAttribute::Element(attributes) = element else {
        return None;
    };
    attributes.iter().find_map(|attribute| match attribute {
        ExpressionAttribute::Data(Expressions::Other {
            expression_type,
            attributes,
        }) if expression_type == "counter" => attributes
            .iter()
            .find(|nla| nla.kind() == COUNTER_PACKETS)
            .and_then(be_u64),
        _ => None,
    })
}

fn be_u64(nla: &DefaultNla) -> Option<u64> {
    let mut value = [0; 8];
    if nla.value_len() != value.len() {
        return None;
    }
    nla.emit_value(&mut value);
    Some(u64::from_be_bytes(value))
}

/// The comment in a rule's user data (type-length-value records).
fn user_data_comment(mut data: &[u8]) -> Option<String> {
    while let [kind, length, rest @ ..] = data {
        let value = rest.get(..usize::from(*length))?;
        if *kind == USER_DATA_COMMENT {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
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

/// Sends one request and reads its answer: one message, or a dump until `NLMSG_DONE`.
fn exchange(
    socket: &Socket,
    request: NfTablesMessage,
    family: NetfilterProtoFamily,
    dump: bool,
) -> Result<Vec<NfTablesMessage>, Error> {
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
            let message = NetlinkMessage::<NetfilterMessage>::deserialize(rest)
                .map_err(|e| Error::Answer(e.to_string()))?;
            let size = usize::try_from(message.header.length).unwrap_or(usize::MAX);
            if size == 0 {
                return Err(Error::Answer("zero-length message".into()));
            }
            if message.header.sequence_number == SEQUENCE {
                interrupted |= message.header.flags & NLM_F_DUMP_INTR != 0;
                match message.payload {
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::NfTables(answer),
                        ..
                    }) => {
                        answers.push(answer);
                        if !dump {
                            return Ok(answers);
                        }
                    }
                    NetlinkPayload::Done(_) => {
                        return if interrupted {
                            Err(Error::Interrupted)
                        } else {
                            Ok(answers)
                        };
                    }
                    NetlinkPayload::Error(error) => {
                        return Err(Error::Refused(error.code.map_or(0, |c| -c.get())));
                    }
                    _ => {}
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

    fn counter_expression(packets: u64) -> ListAttribute<ExpressionAttribute> {
        ListAttribute::Element(vec![
            ExpressionAttribute::Name("counter".into()),
            ExpressionAttribute::Data(Expressions::Other {
                expression_type: "counter".into(),
                attributes: vec![
                    DefaultNla::new(1, 4096u64.to_be_bytes().to_vec()),
                    DefaultNla::new(COUNTER_PACKETS, packets.to_be_bytes().to_vec()),
                ],
            }),
        ])
    }

    fn comment(text: &str) -> Vec<u8> {
        let mut data = vec![USER_DATA_COMMENT, u8::try_from(text.len() + 1).unwrap()];
        data.extend(text.as_bytes());
        data.push(0);
        data
    }

    #[test]
    fn a_counted_rule_gives_chain_handle_comment_and_packets() {
        let rule = RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE_NAME.into()),
                RuleAttribute::Chain("in_x_a".into()),
                RuleAttribute::Handle(22),
                RuleAttribute::Expressions(vec![counter_expression(3)]),
                RuleAttribute::UserData(comment("x/a-from-y ingress[0]")),
            ],
        };
        assert_eq!(
            counted_rule(rule),
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
        let without_counter = RuleMessage {
            attributes: vec![
                RuleAttribute::Chain("c".into()),
                RuleAttribute::Handle(1),
                RuleAttribute::Expressions(vec![]),
            ],
        };
        assert_eq!(counted_rule(without_counter), None);
        let without_chain = RuleMessage {
            attributes: vec![
                RuleAttribute::Handle(1),
                RuleAttribute::Expressions(vec![counter_expression(1)]),
            ],
        };
        assert_eq!(counted_rule(without_chain), None);
        let without_comment = RuleMessage {
            attributes: vec![
                RuleAttribute::Chain("c".into()),
                RuleAttribute::Handle(5),
                RuleAttribute::Expressions(vec![counter_expression(12)]),
            ],
        };
        assert_eq!(
            counted_rule(without_comment).map(|r| (r.comment, r.packets)),
            Some((String::new(), 12))
        );
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
    fn a_counter_with_a_short_value_is_not_read() {
        let short = ListAttribute::Element(vec![ExpressionAttribute::Data(Expressions::Other {
            expression_type: "counter".into(),
            attributes: vec![DefaultNla::new(COUNTER_PACKETS, vec![1, 2])],
        })]);
        assert_eq!(counter_packets(&short), None);
    }
}
