//! The restore ledger's executor (to come): the pure computation of guarded patches
//! moved to [`kt_proto::guard`], shared with kt-shadow's watchdog.
