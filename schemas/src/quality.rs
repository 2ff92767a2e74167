//! Quality: OPC UA status codes, by their exact names and values.
//!
//! The numeric value maps 1:1 onto OPC UA; the name is what JSON carries. See `docs/quality.md`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An OPC UA status code used as a point's quality or as the result of a write.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quality(pub u32);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl Quality {
            $($(#[$doc])* pub const $name: Quality = Quality($value);)*

            /// The OPC UA name of the code, or `None` for a code pointhub does not know by name.
            pub fn name(self) -> Option<&'static str> {
                #[allow(non_upper_case_globals)]
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// Parses an OPC UA name as printed by [`Quality::name`].
            pub fn from_name(name: &str) -> Option<Quality> {
                match name {
                    $(stringify!($name) => Some(Quality($value)),)*
                    _ => None,
                }
            }
        }
    };
}

#[allow(non_upper_case_globals)]
mod consts {
    use super::Quality;
    codes! {
        /// The authority says the value is live.
        Good = 0x0000_0000;
        /// A link on the path to the authority is lost; the value is the last good one.
        UncertainNoCommunicationLastUsableValue = 0x408F_0000;
        /// A link on the path is lost and there never was a value.
        BadNoCommunication = 0x8031_0000;
        /// Connected, but no value has arrived yet.
        BadWaitingForInitialData = 0x8032_0000;
        /// The edge cannot reach the device.
        BadCommunicationError = 0x8005_0000;
        /// The device answers with an error.
        BadDeviceFailure = 0x808B_0000;
        /// What the device (or a broker's message) sent cannot be decoded as the point's value.
        BadDecodingError = 0x8007_0000;
        /// The point's configuration is wrong (bad address, type).
        BadConfigurationError = 0x8089_0000;
        /// The point or its source was taken out of service.
        BadOutOfService = 0x808D_0000;
        /// A write to a point that may not be written.
        BadNotWritable = 0x803B_0000;
        /// A write (or read) the node has no right to.
        BadUserAccessDenied = 0x801F_0000;
        /// A write that got no answer in time.
        BadTimeout = 0x800A_0000;
        /// The point does not exist.
        BadNodeIdUnknown = 0x8034_0000;
        /// The value does not fit the point's data type.
        BadTypeMismatch = 0x8074_0000;
        /// Something failed inside the node.
        BadInternalError = 0x8002_0000;
        /// A write refused because the session already has its limit of writes waiting.
        BadTooManyOperations = 0x8010_0000;
        /// The device's sensor has failed (as a device's OPC UA server reports it).
        BadSensorFailure = 0x808C_0000;
        /// The value is the last usable one; the device could not update it.
        UncertainLastUsableValue = 0x4090_0000;
        /// The sensor is out of calibration or otherwise not accurate.
        UncertainSensorNotAccurate = 0x4093_0000;
        /// The value is outside the range of its engineering units.
        UncertainEngineeringUnitsExceeded = 0x4094_0000;
        /// The value is derived from fewer sources than required.
        UncertainSubNormal = 0x4095_0000;
    }
}

impl Quality {
    /// Good: the top two bits are clear.
    pub fn is_good(self) -> bool {
        self.0 & 0xC000_0000 == 0
    }
    /// Uncertain: the top two bits are `01`.
    pub fn is_uncertain(self) -> bool {
        self.0 & 0xC000_0000 == 0x4000_0000
    }
    /// Bad: the top bit is set.
    pub fn is_bad(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }
    /// The quality a point turns to when the link to its authority is lost, given its quality
    /// before and whether it holds a value: only a good (or already uncertain) value stays usable.
    pub fn stale_from(prev: Quality, has_value: bool) -> Quality {
        Quality::stale(has_value && !prev.is_bad())
    }

    /// The quality of a point whose authority is out of reach: usable last value if it had one
    /// (`UncertainNoCommunicationLastUsableValue`), else `BadNoCommunication`.
    pub fn stale(had_value: bool) -> Quality {
        if had_value {
            Quality::UncertainNoCommunicationLastUsableValue
        } else {
            Quality::BadNoCommunication
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:08X}", self.0),
        }
    }
}

impl fmt::Debug for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_opc_ua() {
        assert_eq!(Quality::Good.0, 0);
        assert_eq!(
            Quality::UncertainNoCommunicationLastUsableValue.0,
            0x408F0000
        );
        assert_eq!(Quality::BadNoCommunication.0, 0x80310000);
        assert_eq!(
            Quality::BadCommunicationError.name(),
            Some("BadCommunicationError")
        );
        assert_eq!(
            Quality::from_name("BadDeviceFailure"),
            Some(Quality(0x808B0000))
        );
        assert_eq!(Quality(0x1234).to_string(), "0x00001234");
        assert!(Quality::Good.is_good());
        assert!(Quality::UncertainNoCommunicationLastUsableValue.is_uncertain());
        assert!(Quality::BadTimeout.is_bad());
        assert_eq!(
            Quality::stale(true),
            Quality::UncertainNoCommunicationLastUsableValue
        );
        assert_eq!(Quality::stale(false), Quality::BadNoCommunication);
    }
}
