//! Annotations kt writes on the objects it creates or changes, and the heartbeat format.

use std::time::SystemTime;

use crate::Error;

/// When the client last proved it is alive: an RFC 3339 UTC timestamp with whole
/// seconds, e.g. `2025-01-31T12:00:00Z` (see [`format_heartbeat`]).
pub const HEARTBEAT: &str = "kt.dev/heartbeat";

/// JSON describing how to put a changed object back (e.g. a Service's original
/// selector, a Deployment's replica count). Its schema belongs to `kt-core`.
pub const RESTORE: &str = "kt.dev/restore";

/// The kt version that created or changed the object ([`crate::VERSION`]).
pub const VERSION: &str = "kt.dev/version";

/// Formats a time as a heartbeat value: RFC 3339, UTC (`Z`), whole seconds.
///
/// Times before 1970 are clamped to the epoch; such clocks are broken anyway.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_secs(1_738_324_800);
/// assert_eq!(kt_proto::annotations::format_heartbeat(t), "2025-01-31T12:00:00Z");
/// ```
pub fn format_heartbeat(time: SystemTime) -> String {
    let time = time.max(SystemTime::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Parses a heartbeat value written by [`format_heartbeat`]. Fractional seconds are
/// accepted; offsets other than `Z` are not (kt writes UTC only).
///
/// # Errors
///
/// [`Error::InvalidHeartbeat`] if the value is not an RFC 3339 UTC timestamp.
pub fn parse_heartbeat(value: &str) -> Result<SystemTime, Error> {
    humantime::parse_rfc3339(value).map_err(|source| Error::InvalidHeartbeat {
        value: value.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn heartbeat_round_trips_at_second_precision() {
        let t = UNIX_EPOCH + Duration::new(1_738_324_800, 999_000_000);
        let text = format_heartbeat(t);
        assert_eq!(text, "2025-01-31T12:00:00Z");
        let back = parse_heartbeat(&text).ok();
        assert_eq!(back, Some(UNIX_EPOCH + Duration::from_secs(1_738_324_800)));
    }

    #[test]
    fn heartbeat_accepts_fractional_seconds() {
        let back = parse_heartbeat("2025-01-31T12:00:00.250Z").ok();
        assert_eq!(
            back,
            Some(UNIX_EPOCH + Duration::new(1_738_324_800, 250_000_000))
        );
    }

    #[test]
    fn heartbeat_refuses_non_utc_and_garbage() {
        for bad in ["2025-01-31T12:00:00+01:00", "yesterday", "", "2025-01-31"] {
            let err = parse_heartbeat(bad).err();
            assert!(
                matches!(err, Some(Error::InvalidHeartbeat { .. })),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn heartbeat_before_the_epoch_is_clamped() {
        let t = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(format_heartbeat(t), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn annotation_names_match_the_design() {
        assert_eq!(HEARTBEAT, "kt.dev/heartbeat");
        assert_eq!(RESTORE, "kt.dev/restore");
        assert_eq!(VERSION, "kt.dev/version");
    }
}
