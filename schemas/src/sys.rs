//! The `$sys` namespace: every node's and hub's own status points live below `$sys/<name>/`
//! (`$sys/hub1/uptime_s`, `$sys/edge1/link/rtt_ms`, `$sys/edge1/modbus/plc1/status`). Names in it
//! are built and recognised here only, so no part of pointhub spells the prefix by hand.

use crate::name::in_namespace;
use std::fmt;

/// The first segment of every status point.
pub const ROOT: &str = "$sys";

/// Whether `name` is a status point (anyone's).
pub fn is_sys(name: &str) -> bool {
    in_namespace(name, ROOT)
}

/// The `$sys` namespace of one node or hub: `$sys/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SysNamespace(String);

impl SysNamespace {
    /// The status namespace of the node or hub called `name`.
    pub fn of(name: &str) -> SysNamespace {
        SysNamespace(format!("{ROOT}/{name}"))
    }

    /// A status point below it: `$sys/<name>/<path>`.
    pub fn point(&self, path: &str) -> String {
        format!("{}/{path}", self.0)
    }

    /// Whether `name` lies in this namespace.
    pub fn contains(&self, name: &str) -> bool {
        in_namespace(name, &self.0)
    }

    /// The namespace as a name: `$sys/<name>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SysNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_built_and_recognised_in_one_place() {
        let ns = SysNamespace::of("edge1");
        assert_eq!(ns.point("link/rtt_ms"), "$sys/edge1/link/rtt_ms");
        assert!(ns.contains("$sys/edge1/link/rtt_ms"));
        assert!(
            !ns.contains("$sys/edge10/link/rtt_ms"),
            "a namespace ends at a '/'"
        );
        assert!(is_sys("$sys/hub1/uptime_s"));
        assert!(!is_sys("$system/x") && !is_sys("plant1/$sys/x"));
    }
}
