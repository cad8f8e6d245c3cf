//! The transition table, the message catalogue, names round-tripping.

use super::*;

#[test]
fn only_the_documented_moves_are_legal() {
    use AlertMove as M;
    use AlertState::*;
    use TransitionError as E;
    assert_eq!(Raised.acknowledge(), Ok(Acknowledged));
    assert_eq!(Raised.clear(), Ok(Cleared));
    assert_eq!(Acknowledged.clear(), Ok(Cleared));
    assert_eq!(Acknowledged.acknowledge(), Err(E::AlreadyAcknowledged));
    assert_eq!(Cleared.acknowledge(), Err(E::AlreadyCleared));
    assert_eq!(Cleared.clear(), Err(E::AlreadyCleared));
    // ISA-18.2: a condition ending unacknowledged returns; acknowledging it clears it.
    assert_eq!(Raised.apply(M::End), Ok(Returned));
    assert_eq!(Acknowledged.apply(M::End), Ok(Cleared));
    assert_eq!(Returned.apply(M::End), Err(E::AlreadyReturned));
    assert_eq!(Returned.acknowledge(), Ok(Cleared));
    assert_eq!(Returned.apply(M::Resume), Ok(Raised));
    assert_eq!(Raised.apply(M::Resume), Err(E::NotReturned));
    assert_eq!(Acknowledged.apply(M::Resume), Err(E::NotReturned));
    assert_eq!(Returned.clear(), Ok(Cleared));
    for s in AlertState::OPEN {
        for m in [M::Shelve, M::Unshelve, M::Suppress, M::Unsuppress] {
            assert_eq!(s.apply(m), Ok(s), "{m:?} is an overlay");
        }
    }
    for m in AlertMove::ALL {
        assert_eq!(Cleared.apply(m), Err(E::AlreadyCleared));
        assert_eq!(AlertMove::parse(m.as_str()), Some(m));
    }
    assert!(AlertState::OPEN.iter().all(|s| s.is_open()) && !Cleared.is_open());
}

#[test]
fn every_message_code_is_in_the_catalogue_once() {
    let mut seen = std::collections::HashSet::new();
    for m in MESSAGE_CODES {
        assert!(seen.insert(m.code.as_str()), "{} twice", m.code.as_str());
        assert_eq!(MessageCode::parse(m.code.as_str()), Some(m.code));
        assert_eq!(serde_json::to_value(m.code).unwrap(), m.code.as_str());
        for p in m.params {
            assert!(m.english.contains(&format!("{{{p}}}")), "{} lacks {p}", m.code.as_str());
        }
    }
}

#[test]
fn names_round_trip() {
    for s in AlertState::ALL {
        assert_eq!(AlertState::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
    for s in Severity::ALL {
        assert_eq!(Severity::parse(s.as_str()), Some(s));
    }
    for k in AlertKind::ALL {
        assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
    }
    assert_eq!(AlertState::parse("open"), None);
}
