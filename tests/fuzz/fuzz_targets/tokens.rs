//! Token decoding: any text as a session or an invoice token is refused or accepted, never a
//! panic; only a token this key signed is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spellcast_application::auth::TokenKeys;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let keys = TokenKeys::hs256(&[7; 32], "fuzz").expect("a 32-byte key");
    assert!(
        keys.verify_session(token).is_err(),
        "a forged session: {token}"
    );
    assert!(
        keys.verify_invoice(token).is_err(),
        "a forged invoice: {token}"
    );
    assert!(keys.verify_invoice_ignoring_expiry(token).is_err());
});
