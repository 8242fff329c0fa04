//! The userspace stack's flows over the session's tunnel.

use std::net::SocketAddr;

use bytes::Bytes;

use super::{DatagramFlow, FlowDialer};
use crate::cluster::target::Destination;
use crate::error::Result;
use crate::outbound::udp::DatagramChannel;
use crate::outbound::{Dialer, RemoteStream};
use crate::task::Tasks;

/// [`FlowDialer`] over the session's tunnel: TCP flows are `direct-tcpip` channels,
/// UDP flows `direct-udp@kt.dev` channels (kt-shadow only).
#[derive(Clone)]
pub(crate) struct TunnelFlows {
    pub(crate) dialer: Dialer,
    pub(crate) tasks: Tasks,
}

impl FlowDialer for TunnelFlows {
    type Tcp = RemoteStream;
    type Udp = DatagramChannel;

    async fn tcp(&self, dst: SocketAddr) -> Result<RemoteStream> {
        self.dialer.dial_ip(dst.ip(), dst.port()).await
    }

    async fn udp(&self, dst: SocketAddr) -> Result<DatagramChannel> {
        DatagramChannel::open(
            &self.dialer,
            &self.tasks,
            &Destination::Ip(dst.ip()),
            &dst.ip().to_string(),
            dst.port(),
        )
        .await
    }
}

impl DatagramFlow for DatagramChannel {
    async fn send(&self, datagram: &[u8]) -> Result<()> {
        DatagramChannel::send(self, datagram).await
    }

    async fn recv(&self) -> Result<Bytes> {
        DatagramChannel::recv(self).await
    }
}
