//! Router mode (`kt-shadow route`): the mesh router in front of a meshed Service; its
//! data plane is [`proxy`].

pub mod proxy;
