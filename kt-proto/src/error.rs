//! The error type of this crate.

/// Everything that can go wrong when reading kt's names, command line or framing, or
/// computing a guarded restore ([`crate::guard`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `kt.dev/role` label value that kt does not know.
    #[error(
        "unknown kt role `{0}`: expected one of shadow-connect, shadow-swap, shadow-expose, shadow-mesh, router \
         (was the object made by a newer kt?)"
    )]
    UnknownRole(String),

    /// A mesh routing rule ([`crate::mesh::Rule`]) that cannot be parsed.
    #[error(
        "invalid mesh rule `{rule}`: {reason}; a rule is `header=value`, `header~regex` or \
         `/path-prefix`, several joined by `&&` (all) or `||` (any)"
    )]
    InvalidRule {
        /// The rule as given (its first 80 characters).
        rule: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A datagram handed to [`crate::DatagramCodec::encode`] is longer than the codec's limit.
    #[error(
        "UDP datagram of {len} bytes exceeds the {max}-byte limit of direct-udp@kt.dev framing; \
         send smaller datagrams (or use TCP for large DNS answers)"
    )]
    DatagramTooLarge {
        /// Length of the datagram that was refused.
        len: usize,
        /// The codec's limit.
        max: usize,
    },

    /// A frame on a `direct-udp@kt.dev` channel announces more bytes than the limit.
    #[error(
        "a frame on the direct-udp@kt.dev channel announces {len} bytes, more than the \
         {max}-byte limit: the peer does not speak this framing; close the channel"
    )]
    FrameTooLarge {
        /// The length the frame header announced.
        len: usize,
        /// The codec's limit.
        max: usize,
    },

    /// A datagram limit outside what the 2-byte length header can express.
    #[error(
        "datagram limit {0} is outside 1..=65535, the range a 2-byte length header can express"
    )]
    InvalidDatagramLimit(usize),

    /// `kt-shadow` was started without a command.
    #[error("missing command: run `kt-shadow serve`, `kt-shadow probe` or `kt-shadow version`")]
    MissingCommand,

    /// `kt-shadow` was started with a command it does not have.
    #[error("unknown command `{0}`: expected serve, probe, version or help")]
    UnknownCommand(String),

    /// An option that the command does not take.
    #[error(
        "unknown option `{option}` for `kt-shadow {command}`; run `kt-shadow help` for the list"
    )]
    UnknownOption {
        /// The command being parsed.
        command: &'static str,
        /// The option as given.
        option: String,
    },

    /// An option that needs a value was last on the command line.
    #[error("option `{0}` needs a value, as in `{0} <value>` or `{0}=<value>`")]
    MissingValue(&'static str),

    /// An option given a value it cannot use.
    #[error("option `{option}` has invalid value `{value}`: {reason}")]
    InvalidValue {
        /// The option.
        option: &'static str,
        /// The value as given.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },

    /// An option given without another one it needs.
    #[error("option `{option}` needs `{needs}`: {reason}")]
    NeedsOption {
        /// The option given.
        option: &'static str,
        /// The option it needs.
        needs: &'static str,
        /// Why.
        reason: &'static str,
    },

    /// A flag that takes no value was given one (`--flag=value`).
    #[error("option `{0}` takes no value; write it alone")]
    UnexpectedValue(&'static str),

    /// A [`RestorePlan`](crate::restore::RestorePlan) or
    /// [`Record`](crate::restore::Record) that is not valid JSON of its schema.
    #[error(
        "invalid {what}: {reason}; it was not written by kt, or was edited by hand \
         (remove the kt.dev/* annotations and restore the object yourself)"
    )]
    InvalidRestore {
        /// `restore plan` or `restore record`.
        what: &'static str,
        /// What serde_json reported.
        reason: String,
    },

    /// A restore plan or record of a schema version newer than this kt reads.
    #[error(
        "{what} version {found} is newer than this kt reads (up to {supported}); \
         upgrade kt to undo it"
    )]
    NewerRestoreVersion {
        /// `restore plan` or `restore record`.
        what: &'static str,
        /// The version found.
        found: u32,
        /// [`PLAN_VERSION`](crate::restore::PLAN_VERSION).
        supported: u32,
    },

    /// A kind of object kt does not change (`--restore`, [`crate::restore::Kind`]).
    #[error(
        "unknown kind `{0}`: kt changes and restores only Service, Deployment and \
         StatefulSet objects"
    )]
    UnknownKind(String),

    /// JSON handed to [`crate::guard`] that is not a Kubernetes object as the API server
    /// returns it.
    #[error(
        "invalid object to restore `{value}`; expected a Kubernetes object as the API server \
         returns it, with apiVersion, kind, metadata.namespace, metadata.name and metadata.uid"
    )]
    NotAnObject {
        /// The JSON, shortened.
        value: String,
    },

    /// A field kt does not change on that kind (or one the object cannot have), in a
    /// step to make or in a record found on an object.
    #[error("invalid field to change on {object} `{path}`; expected {expected}")]
    InvalidField {
        /// The object (`Service dev/web`).
        object: String,
        /// The field's JSON pointer.
        path: String,
        /// What kt changes on that kind.
        expected: String,
    },

    /// A step applied to an object other than the one it names.
    #[error(
        "invalid object for this restore step `{found}`; expected the step's object, \
         {expected}: read that object and pass its JSON"
    )]
    WrongObject {
        /// The object passed (`v1 Service dev/web (uid ...)`).
        found: String,
        /// The step's object.
        expected: String,
    },

    /// The `kt.dev/restore` annotation on an object is not a record this kt reads.
    #[error(
        "invalid `kt.dev/restore` annotation on {object} `{value}`; expected a restore record \
         written by kt ({source}); restore the fields yourself and remove the kt.dev/owner, \
         kt.dev/owner-user, kt.dev/owner-since, kt.dev/lease-expiry and kt.dev/restore \
         annotations"
    )]
    InvalidRecord {
        /// The object.
        object: String,
        /// The annotation's value.
        value: String,
        /// Why it cannot be read ([`Error::InvalidRestore`] or
        /// [`Error::NewerRestoreVersion`]).
        #[source]
        source: Box<Error>,
    },

    /// A session asked to change an object it already holds with other changes.
    #[error(
        "invalid change of {object} by session `{session}`; expected one change per object \
         per session: this session already holds the object with other changes; undo them \
         first"
    )]
    AlreadyChanged {
        /// The object.
        object: String,
        /// The session.
        session: String,
    },

    /// An undo whose operations do not apply to the object they were computed from (a
    /// record whose changes contradict the object).
    #[error(
        "the restore step for {object} does not apply to the object as it is ({reason}); \
         check its kt.dev/restore annotation against the object and restore it by hand"
    )]
    StepDoesNotApply {
        /// The object.
        object: String,
        /// What json-patch reported.
        reason: String,
    },
}
