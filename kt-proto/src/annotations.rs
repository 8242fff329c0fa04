//! Annotations kt writes on the objects it creates or changes.
//!
//! Liveness is not an annotation: each session renews a `coordination.k8s.io` Lease
//! named like its shadow pod (see [`crate::shadow`]).

/// JSON describing how to put a changed object back (e.g. a Service's original
/// selector, a Deployment's replica count). Its schema belongs to `kt-core`.
pub const RESTORE: &str = "kt.dev/restore";

/// The kt version that created or changed the object ([`crate::VERSION`]).
pub const VERSION: &str = "kt.dev/version";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_names_match_the_design() {
        assert_eq!(RESTORE, "kt.dev/restore");
        assert_eq!(VERSION, "kt.dev/version");
    }
}
