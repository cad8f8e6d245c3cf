//! Identifier newtypes. A `DeviceId` or `SegmentId` exists only if it passed `parse`.

use std::fmt;
use std::sync::Arc;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id is empty")]
    Empty { kind: &'static str },
    #[error("{kind} id is {len} bytes long; at most 64 are allowed")]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} id must start with [a-z0-9]")]
    BadStart { kind: &'static str },
    #[error("{kind} id contains {found:?}; only [a-z0-9._-] are allowed")]
    BadChar { kind: &'static str, found: char },
}

fn check(kind: &'static str, s: &str, extra: &[u8]) -> Result<(), IdError> {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(IdError::Empty { kind });
    };
    if bytes.len() > 64 {
        return Err(IdError::TooLong { kind, len: bytes.len() });
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(IdError::BadStart { kind });
    }
    for c in s.chars() {
        let ok = c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || (c.is_ascii() && extra.contains(&(c as u8)));
        if !ok {
            return Err(IdError::BadChar { kind, found: c });
        }
    }
    Ok(())
}

/// An identifier newtype that exists only if it passed `parse`. The bytes live in one shared
/// allocation (`Arc<str>`): a clone, as every map key and message holding the id makes, costs
/// a reference count, not a copy of the string.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $extra:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check($kind, s, $extra)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A field device: `[a-z0-9][a-z0-9._-]{0,63}`.
    DeviceId, "device", b"._-"
);

id_type!(
    /// A road segment of the Road Cadastre: `[a-z0-9][a-z0-9-]{0,63}`.
    SegmentId, "segment", b"-"
);

/// A device's monotonic message counter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_follow_the_topic_grammar() {
        assert!(DeviceId::parse("loop-viale-lavagnini-1").is_ok());
        assert!(DeviceId::parse("a").is_ok());
        assert!(DeviceId::parse("aq.station_7").is_ok());
        assert_eq!(DeviceId::parse(""), Err(IdError::Empty { kind: "device" }));
        assert_eq!(DeviceId::parse("-x"), Err(IdError::BadStart { kind: "device" }));
        assert_eq!(DeviceId::parse("Loop"), Err(IdError::BadStart { kind: "device" }));
        assert_eq!(DeviceId::parse("a/b"), Err(IdError::BadChar { kind: "device", found: '/' }));
        assert_eq!(DeviceId::parse("a+"), Err(IdError::BadChar { kind: "device", found: '+' }));
        assert_eq!(DeviceId::parse("caffè"), Err(IdError::BadChar { kind: "device", found: 'è' }));
        assert!(DeviceId::parse(&"a".repeat(64)).is_ok());
        assert_eq!(
            DeviceId::parse(&"a".repeat(65)),
            Err(IdError::TooLong { kind: "device", len: 65 })
        );
    }

    #[test]
    fn clones_share_the_bytes() {
        let id = DeviceId::parse("loop-viale-lavagnini-1").unwrap();
        let copy = id.clone();
        assert_eq!(copy, id);
        assert!(std::ptr::eq(copy.as_str(), id.as_str()));
        assert_eq!(format!("{id:?}"), "DeviceId(\"loop-viale-lavagnini-1\")");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"loop-viale-lavagnini-1\"");
    }

    #[test]
    fn segment_ids_refuse_dots() {
        assert!(SegmentId::parse("viale-lavagnini").is_ok());
        assert!(SegmentId::parse("viale.lavagnini").is_err());
    }
}
