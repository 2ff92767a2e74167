//! What the audit log records, as a type: every entry's `event` is one of these, so the list
//! in the docs is the list in the code.

/// An audit log entry's kind (its `event` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A node's session was welcomed: fingerprint, name, role, address, software.
    ConnectionAccepted,
    /// A connecting node was refused: no client key, a revoked key, or an unknown one (pending).
    ConnectionRefused,
    /// A node's session ended, with the reason.
    ConnectionClosed,
    /// A key was approved, by an operator or by spending an enrollment token.
    KeyApproved,
    /// An operator revoked a key.
    KeyRevoked,
    /// An operator made an enrollment token.
    TokenCreated,
    /// A new key spent an enrollment token (a `KeyApproved` entry follows).
    TokenUsed,
    /// An enrollment token was refused: unknown, already used, expired, or for another role.
    TokenRefused,
    /// An edge's birth was refused: a point outside its namespace, a conflict, or too many points.
    PublishRefused,
    /// A child hub was refused for a loop in the hub chain (it claims this hub or one above).
    ChainRefused,
    /// A write to a point (from a client, the JSON API or a parent hub), with its result status.
    Write,
    /// An edge answered a write sent to another node; its answer was not used.
    WriteResultRefused,
    /// A console user logged in.
    Login,
    /// A console login was refused (unknown user or wrong password).
    LoginFailed,
    /// An operator added a console user, or reset its password.
    UserAdded,
    /// An operator removed a console user.
    UserRemoved,
    /// An operator made a JSON API token.
    ApiTokenCreated,
    /// An operator revoked a JSON API token.
    ApiTokenRevoked,
    /// An operator removed a durable subscription and its queue.
    DurableRemoved,
    /// The first entry of a new log file after a rotation, chained to the old file's last line.
    AuditRotated,
    /// Refusals past their rate limit were left out: how many, from which source, since when.
    AuditSuppressed,
}

impl Event {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Event; 21] = [
        Event::ConnectionAccepted,
        Event::ConnectionRefused,
        Event::ConnectionClosed,
        Event::KeyApproved,
        Event::KeyRevoked,
        Event::TokenCreated,
        Event::TokenUsed,
        Event::TokenRefused,
        Event::PublishRefused,
        Event::ChainRefused,
        Event::Write,
        Event::WriteResultRefused,
        Event::Login,
        Event::LoginFailed,
        Event::UserAdded,
        Event::UserRemoved,
        Event::ApiTokenCreated,
        Event::ApiTokenRevoked,
        Event::DurableRemoved,
        Event::AuditRotated,
        Event::AuditSuppressed,
    ];

    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::ConnectionAccepted => "connection.accepted",
            Event::ConnectionRefused => "connection.refused",
            Event::ConnectionClosed => "connection.closed",
            Event::KeyApproved => "key.approved",
            Event::KeyRevoked => "key.revoked",
            Event::TokenCreated => "token.created",
            Event::TokenUsed => "token.used",
            Event::TokenRefused => "token.refused",
            Event::PublishRefused => "publish.refused",
            Event::ChainRefused => "chain.refused",
            Event::Write => "write",
            Event::WriteResultRefused => "write.result_refused",
            Event::Login => "login",
            Event::LoginFailed => "login.failed",
            Event::UserAdded => "user.added",
            Event::UserRemoved => "user.removed",
            Event::ApiTokenCreated => "api_token.created",
            Event::ApiTokenRevoked => "api_token.revoked",
            Event::DurableRemoved => "durable.removed",
            Event::AuditRotated => "audit.rotated",
            Event::AuditSuppressed => "audit.suppressed",
        }
    }

    /// A refusal: recorded up to a rate per source, then counted (see `audit_limit`).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Event::ConnectionRefused
                | Event::TokenRefused
                | Event::LoginFailed
                | Event::PublishRefused
                | Event::ChainRefused
                | Event::WriteResultRefused
        )
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_security_docs_name_every_event() {
        let doc = include_str!("../../docs/security.md");
        for e in Event::ALL {
            assert!(
                doc.contains(&format!("`{e}`")),
                "docs/security.md does not name `{e}`"
            );
        }
    }
}
