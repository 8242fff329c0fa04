//! Remote forwards: ports the shadow listens on for the client (`tcpip-forward`), each
//! connection to them arriving as a `forwarded-tcpip` channel. The registry outlives
//! one SSH link: every new link asks the shadow again for every registered port, so a
//! reconnect does not end an inbound forward.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use russh::Channel;
use russh::client::Msg;
use tokio::sync::mpsc;

/// How many forwarded connections may wait for their consumer before new ones are
/// refused: as many as the shadow lets one SSH connection open at once
/// ([`kt_proto::cli::DEFAULT_MAX_CHANNELS`]), so a burst the shadow accepts is never
/// refused here. (With 128, 59 of 1,000 connections opened at once were reset while
/// the machine was busy: the consumer fell behind the burst.)
const BACKLOG: usize = kt_proto::cli::DEFAULT_MAX_CHANNELS;

/// One connection the shadow accepted on a remote-forwarded port.
pub(crate) struct Accepted {
    /// The channel carrying the connection's bytes.
    pub(crate) channel: Channel<Msg>,
    /// The port the shadow accepted it on.
    pub(crate) bound_port: u32,
    /// Who connected, as the shadow saw it (`ip:port`).
    pub(crate) peer: String,
}

type Key = (String, u32);

/// The remote forwards of one transport.
#[derive(Clone, Default)]
pub(crate) struct RemoteForwards {
    routes: Arc<Mutex<HashMap<Key, mpsc::Sender<Accepted>>>>,
}

impl RemoteForwards {
    /// Registers `address:port` (a port the shadow bound already) and returns where its
    /// connections arrive.
    pub(crate) fn register(&self, address: &str, port: u32) -> RemoteForward {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let key = (address.to_owned(), port);
        self.lock().insert(key.clone(), tx);
        RemoteForward {
            key,
            port,
            incoming: rx,
            registry: self.clone(),
        }
    }

    /// Every registered `(address, port)`, for a new link to ask for again.
    pub(crate) fn registered(&self) -> Vec<Key> {
        self.lock().keys().cloned().collect()
    }

    /// Hands a forwarded connection to its consumer; `Err` says why it is refused.
    pub(crate) fn deliver(
        &self,
        address: &str,
        port: u32,
        accepted: Accepted,
    ) -> Result<(), &'static str> {
        let routes = self.lock();
        let Some(tx) = routes.get(&(address.to_owned(), port)).or_else(|| {
            routes
                .iter()
                .find(|((_, p), _)| *p == port)
                .map(|(_, tx)| tx)
        }) else {
            return Err("no remote forward is registered for it");
        };
        tx.try_send(accepted).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "too many connections waiting",
            mpsc::error::TrySendError::Closed(_) => "its consumer has gone",
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, mpsc::Sender<Accepted>>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A registered remote forward: its connections, in order. Dropping it unregisters
/// the port (connections to it are then refused).
pub(crate) struct RemoteForward {
    key: Key,
    /// The port the shadow listens on.
    pub(crate) port: u32,
    incoming: mpsc::Receiver<Accepted>,
    registry: RemoteForwards,
}

impl RemoteForward {
    /// The next forwarded connection; `None` once the transport is gone.
    pub(crate) async fn accept(&mut self) -> Option<Accepted> {
        self.incoming.recv().await
    }
}

impl Drop for RemoteForward {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}
