//! The russh handler of one SSH connection: authentication, channel opens, global
//! requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use kt_proto::channel::is_direct_udp;
use kt_proto::shadow::{HEALTH_COMMAND, HEALTH_OUTPUT};
use russh::keys::ssh_key::{HashAlg, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tracing::{debug, info, warn};

use crate::server::{ClientGuard, ConnCtx, State};
use crate::{inbound, tcp, udp};

/// One SSH connection. Dropped by russh when the connection ends, which cancels every
/// task of the connection; its forwarded ports stay open and hold new connections
/// ([`crate::inbound`]).
pub(crate) struct ConnHandler {
    state: Arc<State>,
    ctx: ConnCtx,
    peer: SocketAddr,
    client: Option<ClientGuard>,
    authenticated: Option<oneshot::Sender<()>>,
    /// The connection's pre-authentication slot, given back at login.
    preauth: Option<OwnedSemaphorePermit>,
    /// Channel slots of open session channels, given back when the client closes them
    /// (`direct-tcpip` channels hold theirs in their task).
    session_channels: HashMap<ChannelId, ChannelSlots>,
}

/// What an open channel holds (see [`ConnHandler::slots`]); dropped when it ends.
pub(crate) struct ChannelSlots {
    _channel: OwnedSemaphorePermit,
    _udp_flow: Option<OwnedSemaphorePermit>,
}

impl Drop for ConnHandler {
    fn drop(&mut self) {
        self.ctx.cancel.cancel();
    }
}

impl ConnHandler {
    pub(crate) fn new(
        state: Arc<State>,
        ctx: ConnCtx,
        peer: SocketAddr,
        authenticated: oneshot::Sender<()>,
        preauth: OwnedSemaphorePermit,
    ) -> Self {
        ConnHandler {
            state,
            ctx,
            peer,
            client: None,
            authenticated: Some(authenticated),
            preauth: Some(preauth),
            session_channels: HashMap::new(),
        }
    }

    /// The slots a channel being opened holds while open: a channel slot, and a UDP
    /// flow slot for a UDP flow. Over a limit: the open failure to answer with, logged.
    fn slots(&self, kind: &str, udp: bool) -> Result<ChannelSlots, ChannelOpenFailure> {
        let limits = &self.ctx.limits;
        let taken = limits.channel().and_then(|channel| {
            let flow = if udp { Some(limits.udp_flow()?) } else { None };
            Ok(ChannelSlots {
                _channel: channel,
                _udp_flow: flow,
            })
        });
        if let Err(failure) = &taken {
            warn!(
                conn = self.ctx.id,
                peer = %self.peer,
                kind,
                "channel open refused: {}",
                failure.description()
            );
        }
        taken
    }

    fn check_key(&self, user: &str, key: &PublicKey) -> Auth {
        if self.state.authorized.contains(key) {
            Auth::Accept
        } else {
            info!(
                conn = self.ctx.id,
                peer = %self.peer,
                user,
                key = %key.fingerprint(HashAlg::Sha256),
                "public key not in authorized_keys; refused"
            );
            Auth::reject()
        }
    }
}

impl Handler for ConnHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.check_key(user, offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let auth = self.check_key(user, key.public_key);
        if auth == Auth::Accept {
            info!(
                conn = self.ctx.id,
                peer = %self.peer,
                user,
                key = %key.public_key.fingerprint(HashAlg::Sha256),
                "client authenticated"
            );
        }
        Ok(auth)
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        // Before the success reply is sent: a client that saw it can count on the slot
        // being free for the next connection.
        self.preauth = None;
        self.client = Some(ClientGuard::new(&self.state.clients));
        if let Some(tx) = self.authenticated.take() {
            let _ = tx.send(());
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only `exec kt-health` is served; requests arrive through the session methods.
        match self.slots("session", false) {
            Ok(slots) => {
                self.session_channels.insert(channel.id(), slots);
                reply.accept().await;
            }
            Err(failure) => reply.reject(failure).await,
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.session_channels.remove(&channel);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if data == HEALTH_COMMAND.as_bytes() {
            debug!(conn = self.ctx.id, "kt-health");
            session.channel_success(channel)?;
            session.data(channel, HEALTH_OUTPUT.as_bytes().to_vec())?;
            session.exit_status_request(channel, 0)?;
            session.eof(channel)?;
            session.close(channel)?;
        } else {
            info!(
                conn = self.ctx.id,
                command = %String::from_utf8_lossy(data),
                "exec refused: kt-shadow runs no commands but `{HEALTH_COMMAND}`"
            );
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        info!(conn = self.ctx.id, "shell refused: kt-shadow has no shell");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        info!(conn = self.ctx.id, name, "subsystem refused");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ctx = self.ctx.clone();
        let host = host_to_connect.to_owned();
        let udp = is_direct_udp(originator_address);
        let slots = match self.slots(if udp { "direct-udp" } else { "direct-tcpip" }, udp) {
            Ok(slots) => slots,
            Err(failure) => {
                reply.reject(failure).await;
                return Ok(());
            }
        };
        if udp {
            self.ctx.tracker.spawn(async move {
                let _slots = slots;
                udp::serve_direct_udp(ctx, channel, reply, host, port_to_connect).await;
            });
        } else {
            self.ctx.tracker.spawn(async move {
                let _slots = slots;
                tcp::serve_direct_tcpip(ctx, channel, reply, host, port_to_connect).await;
            });
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(requested_port) = tcp::wire_port(*port) else {
            info!(
                conn = self.ctx.id,
                address,
                port = *port,
                "tcpip-forward refused: invalid port"
            );
            return Ok(false);
        };
        let bind_addr = match tcp::forward_bind_addr(address, requested_port) {
            Ok(addr) => addr,
            Err(err) => {
                warn!(conn = self.ctx.id, address, error = %err, "tcpip-forward refused");
                return Ok(false);
            }
        };
        let allowed = self.state.remote_forward_ports.contains(&requested_port);
        let client = inbound::Client {
            ctx: self.ctx.clone(),
            handle: session.handle(),
            address: Arc::from(address),
        };
        match self.state.inbound.register(bind_addr, allowed, client) {
            Ok((bound_port, existed)) => {
                *port = u32::from(bound_port);
                if existed {
                    info!(conn = self.ctx.id, address, %bind_addr, "remote forward taken over by this connection");
                } else {
                    info!(conn = self.ctx.id, address, %bind_addr, port = bound_port, "remote forward listening");
                }
                Ok(true)
            }
            Err(inbound::Refusal::NotAllowed) => {
                warn!(
                    conn = self.ctx.id,
                    address,
                    port = requested_port,
                    allowed = ?self.state.remote_forward_ports,
                    "tcpip-forward refused: this shadow may not listen on port {requested_port} \
                     (only on the ports given with --remote-forward)"
                );
                Ok(false)
            }
            Err(inbound::Refusal::Bind(err)) => {
                warn!(conn = self.ctx.id, %bind_addr, error = %err, "tcpip-forward refused: cannot listen");
                Ok(false)
            }
        }
    }

    /// Closes the port for good, whichever connection asked for it (there is one
    /// authorized client).
    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let addr = tcp::wire_port(port)
            .filter(|p| *p != 0)
            .and_then(|p| tcp::forward_bind_addr(address, p).ok());
        if let Some(addr) = addr
            && self.state.inbound.cancel(addr)
        {
            info!(
                conn = self.ctx.id,
                address, port, "remote forward cancelled"
            );
            return Ok(true);
        }
        debug!(
            conn = self.ctx.id,
            address, port, "cancel-tcpip-forward for an unknown forward"
        );
        Ok(false)
    }
}
