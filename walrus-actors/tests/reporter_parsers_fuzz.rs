//! Every Reporter parser of outside text (procfs, status pages, HTTP answers, the bypass
//! file) returns a value or an error on any input, never panics; and mutations of the
//! real captured outputs either parse or fail cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use walrus_actors::reporter::{bypass, http, os, web};

const CAPTURES: [&str; 5] = [
    include_str!("fixtures/nginx-1.22-stub_status-after-25.txt"),
    include_str!("fixtures/apache-2.4-status-auto-after-25.txt"),
    include_str!("fixtures/linux-proc-stat-1.txt"),
    include_str!("fixtures/linux-proc-meminfo.txt"),
    include_str!("fixtures/linux-proc-vmstat-1.txt"),
];

fn all_parsers(text: &str) {
    let _ = os::parse_proc_stat(text);
    let _ = os::parse_meminfo(text);
    let _ = os::parse_vmstat(text);
    let _ = web::parse_stub_status(text);
    let _ = web::parse_apache_auto(text);
    let _ = bypass::parse_bypass(text);
    let _ = http::parse_response(text.as_bytes());
    let _ = text.parse::<http::HttpUrl>();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        all_parsers(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_http_parser(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = http::parse_response(&bytes);
        let mut with_head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        with_head.extend_from_slice(&bytes);
        let _ = http::parse_response(&with_head);
    }

    #[test]
    fn mutated_captures_never_panic(
        which in 0usize..CAPTURES.len(),
        at in any::<prop::sample::Index>(),
        cut in any::<bool>(),
        insert in "[0-9a-zA-Z :\\-\\n]{0,8}",
    ) {
        let base = CAPTURES[which];
        let mut i = at.index(base.len() + 1);
        while !base.is_char_boundary(i) {
            i -= 1;
        }
        let text = if cut {
            format!("{}{}", &base[..i], insert)
        } else {
            format!("{}{}{}", &base[..i], insert, &base[i..])
        };
        all_parsers(&text);
    }
}
