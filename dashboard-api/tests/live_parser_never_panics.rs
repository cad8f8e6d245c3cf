//! The live websocket's client-message parser on arbitrary text: a message or an error
//! string (sent back as an `error` frame), never a panic. `fuzz/` explores it for longer.

use dashboard_api::live::parse_client_message;
use proptest::prelude::*;

fn messageish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"type\"".to_owned()),
        Just("\"subscribe\"".to_owned()),
        Just("\"unsubscribe\"".to_owned()),
        Just("\"ping\"".to_owned()),
        Just("\"devices\"".to_owned()),
        Just("\"metrics\"".to_owned()),
        Just("\"segments\"".to_owned()),
        Just("\"alerts\"".to_owned()),
        Just("\"values\"".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("\"speed_kmh\"".to_owned()),
        Just("\u{0}".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[ -~]{0,10}".prop_map(|s| format!("{s:?}")),
        "\\PC{0,6}".prop_map(|s| format!("\"{s}\"")),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn client_message_parser_never_panics(text in prop_oneof![messageish(), "\\PC{0,200}"]) {
        let _ = parse_client_message(&text);
    }
}

#[test]
fn unknown_fields_and_deep_nesting_are_errors() {
    assert!(parse_client_message(r#"{"type":"subscribe","extra":1}"#).is_err());
    assert!(parse_client_message(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))).is_err());
    assert!(parse_client_message(r#"{"type":"ping"}"#).is_ok());
}
