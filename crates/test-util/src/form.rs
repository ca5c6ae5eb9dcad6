//! `application/x-www-form-urlencoded` decoding (WHATWG URL standard, §5.1),
//! for token request bodies and Basic client credentials (RFC 6749 §2.3.1).

/// Splits a form body into decoded name/value pairs, in order.
pub(crate) fn parse(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|sequence| !sequence.is_empty())
        .map(|sequence| {
            let (name, value) = match sequence.iter().position(|&b| b == b'=') {
                Some(i) => (&sequence[..i], &sequence[i + 1..]),
                None => (sequence, &b""[..]),
            };
            (decode(name), decode(value))
        })
        .collect()
}

/// Decodes one form-encoded component: `+` is a space, `%XX` a byte; a `%`
/// not followed by two hex digits stays as it is. Invalid UTF-8 is replaced,
/// which can only make a comparison fail.
pub(crate) fn decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                input.get(i + 1).and_then(hex),
                input.get(i + 2).and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
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
