//! Annotations kt writes on the objects it creates or changes.
//!
//! A session's own liveness is not an annotation: each session renews a
//! `coordination.k8s.io` Lease named like its shadow pod (see [`crate::shadow`]). Only
//! its hold on objects it does not own carries an expiry, [`LEASE_EXPIRY`] below.
//!
//! # On objects kt changes but does not own
//!
//! When a swap changes a Service's selector or a workload's replica count, kt records on
//! that object who holds it and how to undo the change: [`OWNER`], [`OWNER_USER`],
//! [`OWNER_SINCE`], [`LEASE_EXPIRY`] and [`RESTORE`].
//!
//! The holder and times are separate plain annotations: `kubectl describe` shows them as
//! they are, and the heartbeat renews [`LEASE_EXPIRY`] alone without rewriting the rest.
//! The original values are one JSON annotation ([`RESTORE`], a
//! [`Record`](crate::restore::Record)) rather than one `kt.dev/original-<field>` key per
//! field: the values are JSON (a selector is a map), a field's path (`/spec/selector`)
//! cannot be an annotation key's name part (no `/`, at most 63 characters), and kt
//! writes and removes the record as one unit.

/// The changes kt made to an object it does not own, as JSON
/// ([`Record`](crate::restore::Record)): each field's path, original value and the value
/// kt wrote. Enough to undo them without the session's
/// [`RestorePlan`](crate::restore::RestorePlan).
pub const RESTORE: &str = "kt.dev/restore";

/// The session id holding an object kt changed (the `kt.dev/session` label of its
/// own objects).
pub const OWNER: &str = "kt.dev/owner";

/// The user running the session in [`OWNER`], for messages ("held by alice").
pub const OWNER_USER: &str = "kt.dev/owner-user";

/// When the session in [`OWNER`] took the object, RFC 3339 in UTC.
pub const OWNER_SINCE: &str = "kt.dev/owner-since";

/// When the hold of [`OWNER`] expires unless its heartbeat renews it, RFC 3339 in UTC.
/// Past it, another kt run may undo the [`RESTORE`] record and take the object over.
pub const LEASE_EXPIRY: &str = "kt.dev/lease-expiry";

/// Every annotation kt records on an object it changed but does not own.
pub const HOLD: [&str; 5] = [OWNER, OWNER_USER, OWNER_SINCE, LEASE_EXPIRY, RESTORE];

/// The kt version that created or changed the object ([`crate::VERSION`]).
pub const VERSION: &str = "kt.dev/version";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_names_match_the_design() {
        assert_eq!(RESTORE, "kt.dev/restore");
        assert_eq!(VERSION, "kt.dev/version");
        assert_eq!(OWNER, "kt.dev/owner");
        assert_eq!(OWNER_USER, "kt.dev/owner-user");
        assert_eq!(OWNER_SINCE, "kt.dev/owner-since");
        assert_eq!(LEASE_EXPIRY, "kt.dev/lease-expiry");
    }
}
