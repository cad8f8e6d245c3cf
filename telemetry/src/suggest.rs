//! "Did you mean …?": the known name closest to a misspelt one, for error messages that
//! name a device kind, a road segment or a device that does not exist.

/// The candidate closest to `given` by edit distance, if it is close enough to be a typo:
/// at most a third of the longer name's characters differ (and at least one may).
/// Ties go to the first candidate.
pub fn closest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let distance = strsim::levenshtein(given, c);
        let allowed = (given.chars().count().max(c.chars().count()) / 3).max(1);
        if distance == 0 || distance > allowed {
            continue;
        }
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, c));
        }
    }
    best.map(|(_, c)| c)
}

/// ` (did you mean "x"?)` for a suggestion, or nothing.
pub fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_its_name_and_an_unrelated_name_finds_none() {
        let segments = ["seg-99", "seg-100", "viale-strozzi"];
        assert_eq!(closest("seg-999", segments), Some("seg-99"));
        assert_eq!(closest("viale-strozi", segments), Some("viale-strozzi"));
        assert_eq!(closest("lungarno", segments), None);
        assert_eq!(closest("seg-99", segments), None, "an exact match is no suggestion");
        assert_eq!(did_you_mean(Some("seg-99")), " (did you mean \"seg-99\"?)");
        assert_eq!(did_you_mean(None), "");
    }
}
