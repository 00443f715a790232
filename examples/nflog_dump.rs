//! Prints raw NFLOG datagrams as hex, one per line, for capturing test fixtures.
//!
//! `nflog_dump <group> <count> [queue-threshold]` binds the group in the current network
//! namespace (run it with `ip netns exec`), prints `count` datagrams and exits. The fixtures in
//! `src/flowlog/nflog/tests.rs` and `src/flowlog/decode/tests.rs` were captured with it.

use kube_nftpol::flowlog::nflog::{Config, NflogSocket};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let group = args.next().unwrap_or_else(|| "100".into()).parse()?;
    let count: usize = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let queue_threshold = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let config = Config {
        queue_threshold,
        // Long enough that a batch fills before the timer flushes it.
        flush_timeout: std::time::Duration::from_secs(1),
        ..Config::new(group, 1)
    };
    let mut socket = NflogSocket::bind(&config)?;
    eprintln!("bound nflog group {group}");
    let pending = socket.take_pending().len();
    if pending > 0 {
        eprintln!("{pending} records arrived while binding (not printed: already parsed)");
    }
    let mut buf = vec![0; 1 << 17];
    let mut printed = 0;
    while printed < count {
        match socket.recv(&mut buf) {
            Ok(len) => {
                let hex: String = buf[..len].iter().map(|b| format!("{b:02x}")).collect();
                println!("{hex}");
                printed += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
