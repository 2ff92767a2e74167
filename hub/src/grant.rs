//! The one grant type: what an approved key may do, wherever the approval comes from (a
//! `[[nodes]]` entry of the config, an operator's approval, an enrollment token): its role, its
//! name on the hub, where it may publish, and what it may read and write. The config, the store's
//! key and token records and the admin requests all carry a [`Grant`], checked by one validator.

use pointhub_schemas::{Pattern, Role};
use serde::{Deserialize, Serialize};

/// `namespace = "*"`: a child hub that may publish under any namespace.
pub const ANY_NAMESPACE: &str = "*";

/// What an approval or a token grants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// The role the key is admitted as: edge, client or hub (a child hub).
    pub role: Role,
    /// The node's name on this hub: one segment without '/', at most 64 bytes.
    pub name: String,
    /// Where an edge or child hub may publish; `None`: an edge's own name. A child hub needs one
    /// (`*` for anywhere).
    pub namespace: Option<String>,
    /// Patterns the node may read; empty gives a client everything, any other role nothing.
    #[serde(default)]
    pub read: Vec<Pattern>,
    /// Patterns of writable points the node may write; empty (the default) means none.
    #[serde(default)]
    pub write: Vec<Pattern>,
}

impl Grant {
    /// Whether the grant fits together; if not, what to change. A new approval or token must
    /// give a child hub a namespace.
    pub fn validate(&self) -> Result<(), GrantError> {
        if self.role == Role::Hub && self.namespace.is_none() {
            return Err(GrantError("a child hub needs a namespace: the one it forwards (e.g. --namespace plant1), or \"*\" to let it publish under any namespace".into()));
        }
        self.validate_shape()
    }

    /// The checks every grant passes, the config's included (where a child hub without a
    /// namespace is only warned about, so configs that loaded before still load).
    pub fn validate_shape(&self) -> Result<(), GrantError> {
        self.check().map_err(GrantError)
    }

    fn check(&self) -> Result<(), String> {
        pointhub_schemas::name::validate_name(&self.name, 64).map_err(|e| format!("name: {e}"))?;
        if self.name.contains('/') {
            return Err("name: a node name is one segment, without '/'".into());
        }
        match (self.role, self.namespace.as_deref()) {
            (Role::Hub, Some(ANY_NAMESPACE)) => {}
            (_, Some(ANY_NAMESPACE)) => {
                return Err(format!(
                    "namespace \"*\" (anywhere) is for child hubs only: give this {} a namespace of its own",
                    self.role.as_str()
                ))
            }
            (_, Some(ns)) => pointhub_schemas::name::validate_name(ns, 256)
                .map_err(|e| format!("namespace: {e}"))?,
            (_, None) => {}
        }
        Ok(())
    }

    /// The grant as it is stored: clients read everything unless told otherwise; nobody writes
    /// unless told.
    pub fn with_default_read(&self) -> Grant {
        let mut g = self.clone();
        if g.read.is_empty() && g.role == Role::Client {
            g.read = vec![Pattern::all()];
        }
        g
    }
}

/// A grant that does not fit together: what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrantError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, name: &str, namespace: Option<&str>) -> Grant {
        Grant {
            role,
            name: name.into(),
            namespace: namespace.map(Into::into),
            read: vec![],
            write: vec![],
        }
    }

    #[test]
    fn one_validator_for_every_grant() {
        grant(Role::Edge, "edge1", None)
            .validate()
            .expect("an edge");
        grant(Role::Hub, "dmz", Some("*"))
            .validate()
            .expect("a child hub anywhere");
        let e = grant(Role::Hub, "dmz", None)
            .validate()
            .expect_err("refused");
        assert!(e.0.contains("needs a namespace"), "{e}");
        grant(Role::Hub, "dmz", None)
            .validate_shape()
            .expect("a config's child hub without a namespace is only warned about");
        let e = grant(Role::Edge, "a/b", None)
            .validate()
            .expect_err("refused");
        assert!(e.0.contains("one segment"), "{e}");
        let e = grant(Role::Client, "c", Some("*"))
            .validate()
            .expect_err("refused");
        assert!(e.0.contains("child hubs only"), "{e}");
    }

    #[test]
    fn clients_read_everything_unless_told_and_the_stored_shape_is_flat() {
        let g = grant(Role::Client, "hmi", None).with_default_read();
        assert_eq!(g.read, vec![Pattern::all()]);
        assert!(grant(Role::Edge, "e", None)
            .with_default_read()
            .read
            .is_empty());
        let v = serde_json::to_value(&g).expect("json");
        assert_eq!(v["name"], "hmi");
        assert_eq!(v["role"], "client");
    }
}
