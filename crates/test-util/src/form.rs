//! `application/x-www-form-urlencoded` decoding (WHATWG URL standard, §5.1),
//! for token request bodies and Basic client credentials (RFC 6749 §2.3.1).

/// Splits a form body into decoded name/value pairs, in order.
pub(crate) fn parse(input: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(input).into_owned().collect()
}

/// Decodes one form-encoded component: `+` is a space, `%XX` a byte; a `%`
/// not followed by two hex digits stays as it is. Invalid UTF-8 is replaced,
/// which can only make a comparison fail.
pub(crate) fn decode(input: &[u8]) -> String {
    let spaced: Vec<u8> = input
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_percent_and_leaves_stray_percent() {
        assert_eq!(decode(b"a+b%20c%2Bd%3a%e2%82%AC"), "a b c+d:\u{20ac}");
        assert_eq!(decode(b"100%"), "100%");
        assert_eq!(decode(b"%zz%4"), "%zz%4");
    }

    #[test]
    fn parses_pairs_in_order_and_skips_empty_sequences() {
        assert_eq!(
            parse(b"grant_type=refresh_token&&refresh_token=r%26t&flag&x=a=b"),
            vec![
                ("grant_type".to_owned(), "refresh_token".to_owned()),
                ("refresh_token".to_owned(), "r&t".to_owned()),
                ("flag".to_owned(), String::new()),
                ("x".to_owned(), "a=b".to_owned()),
            ]
        );
    }
}
