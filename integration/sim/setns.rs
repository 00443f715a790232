//! Creating sockets inside a network namespace from this test process.
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life. [`InNetns`] keeps one thread parked inside a namespace (`setns(2)` on
//! `/run/netns/<name>` changes only the calling thread's namespace) and runs small jobs there,
//! such as `socket(2)`; the sockets it returns are then used from any thread or async task.
//! Servers, probes and the `/readyz` client all get their sockets this way, so the test needs
//! no helper processes inside pods.
//!
//! It does not create or delete namespaces (that is [`crate::netns`]).

use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::thread;

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, Socket, Type};

type Job = Box<dyn FnOnce() + Send>;

/// A thread inside one network namespace that runs jobs for us; it leaves (and releases the
/// namespace) on drop.
#[derive(Debug)]
pub struct InNetns {
    name: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl InNetns {
    /// Starts a thread inside the namespace `ip netns` knows as `name`.
    pub fn enter(name: &str) -> io::Result<Self> {
        let file = File::open(format!("/run/netns/{name}"))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (entered_tx, entered_rx) = mpsc::channel::<io::Result<()>>();
        let thread = thread::Builder::new()
            .name(format!("in-{name}"))
            .spawn(move || {
                let entered = setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from);
                drop(file);
                let ok = entered.is_ok();
                let _ = entered_tx.send(entered);
                if ok {
                    for job in queue {
                        job();
                    }
                }
            })?;
        let entered = entered_rx
            .recv()
            .map_err(|_| io::Error::other("the namespace thread ended before entering"))?;
        let mut this = Self {
            name: name.to_owned(),
            jobs: Some(jobs),
            thread: Some(thread),
        };
        if let Err(e) = entered {
            this.stop();
            return Err(io::Error::new(e.kind(), format!("setns into {name}: {e}")));
        }
        Ok(this)
    }

    /// Runs `job` inside the namespace and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(job());
        }))?;
        rx.await.map_err(|_| self.gone())
    }

    /// A non-blocking socket created inside the namespace.
    pub async fn socket(
        &self,
        domain: Domain,
        ty: Type,
        protocol: Option<Protocol>,
    ) -> io::Result<Socket> {
        let socket = self
            .run(move || Socket::new(domain, ty, protocol))
            .await??;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    fn submit(&self, job: Job) -> io::Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(|| self.gone())?
            .send(job)
            .map_err(|_| self.gone())
    }

    fn gone(&self) -> io::Error {
        io::Error::other(format!("the thread inside {} is gone", self.name))
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        self.stop();
    }
}
