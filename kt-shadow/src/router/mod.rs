//! Router mode (`kt-shadow route`): the mesh router in front of a meshed Service; its
//! data plane is [`proxy`], its life (routes from the developers' shadows, reports,
//! renewals, the end) [`control`]; its UDP ports are relayed unrouted by [`udp`].

pub mod control;
pub mod proxy;
pub mod udp;
