//! Labels on every Kubernetes object kt creates, and the [`Role`] of a kt pod.
//!
//! Labels select: `kt clean` finds leftovers with
//! `app.kubernetes.io/managed-by=kt`, a session finds its own objects with
//! `kt.dev/session=<id>`. Data that is not selected on goes into
//! [annotations](crate::annotations).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The well-known label saying which tool manages an object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The value of [`MANAGED_BY`] on every object kt creates.
pub const MANAGED_BY_VALUE: &str = "kt";

/// Label holding the id of the kt session that created the object.
pub const SESSION: &str = "kt.dev/session";

/// Label holding the object's [`Role`].
pub const ROLE: &str = "kt.dev/role";

/// What a kt pod is for; the value of the [`ROLE`] label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A shadow giving the client outbound access to the cluster (`Session::connect`).
    ShadowConnect,
    /// A shadow that took over a workload's traffic (`session.swap`, kt-connect's `exchange`).
    ShadowSwap,
    /// A shadow behind a new Service that publishes a local port (`session.expose`).
    ShadowExpose,
    /// A developer's shadow behind a mesh router, taking the requests its rule matches
    /// (`session.mesh`).
    ShadowMesh,
    /// A router that sends marked requests to a shadow and the rest to the originals (`mesh`).
    Router,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 5] = [
        Role::ShadowConnect,
        Role::ShadowSwap,
        Role::ShadowExpose,
        Role::ShadowMesh,
        Role::Router,
    ];

    /// The label value, e.g. `shadow-connect`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::ShadowConnect => "shadow-connect",
            Role::ShadowSwap => "shadow-swap",
            Role::ShadowExpose => "shadow-expose",
            Role::ShadowMesh => "shadow-mesh",
            Role::Router => "router",
        }
    }

    /// Whether a pod of this role runs `kt-shadow`.
    pub const fn is_shadow(self) -> bool {
        !matches!(self, Role::Router)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| Error::UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_through_its_label_value() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().ok(), Some(role));
            assert_eq!(role.to_string(), role.as_str());
        }
    }

    #[test]
    fn label_values_match_the_design() {
        let values: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            values,
            [
                "shadow-connect",
                "shadow-swap",
                "shadow-expose",
                "shadow-mesh",
                "router"
            ]
        );
        assert_eq!(MANAGED_BY, "app.kubernetes.io/managed-by");
        assert_eq!(MANAGED_BY_VALUE, "kt");
        assert_eq!(SESSION, "kt.dev/session");
        assert_eq!(ROLE, "kt.dev/role");
    }

    #[test]
    fn unknown_role_is_refused_with_the_valid_list() {
        let err = "shadow".parse::<Role>().err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("`shadow`"), "{msg}");
        assert!(msg.contains("shadow-connect"), "{msg}");
        // Label values are case-sensitive in Kubernetes.
        assert!("Router".parse::<Role>().is_err());
    }

    #[test]
    fn only_the_router_is_not_a_shadow() {
        assert!(Role::ShadowConnect.is_shadow());
        assert!(Role::ShadowSwap.is_shadow());
        assert!(Role::ShadowExpose.is_shadow());
        assert!(Role::ShadowMesh.is_shadow());
        assert!(!Role::Router.is_shadow());
    }
}
