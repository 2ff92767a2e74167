//! What the audit log records, as a type: every entry's `event` is one of these, so the list
//! in the docs is the list in the code.

/// An audit log entry's kind (its `event` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    ConnectionAccepted,
    ConnectionRefused,
    ConnectionClosed,
    KeyApproved,
    KeyRevoked,
    TokenCreated,
    TokenUsed,
    TokenRefused,
    PublishRefused,
    ChainRefused,
    Write,
    WriteResultRefused,
    Login,
    LoginFailed,
    UserAdded,
    UserRemoved,
    ApiTokenCreated,
    ApiTokenRevoked,
    AuditRotated,
    AuditSuppressed,
}

impl Event {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Event; 20] = [
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
