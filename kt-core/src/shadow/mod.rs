//! The shadow: the pod kt runs in the cluster, its Secret and keys, the SSH transport
//! to it and its heartbeat.

pub(crate) mod heartbeat;
pub(crate) mod spec;
pub(crate) mod wait;
