//! The catalog loader: any text as a spell file is a spell or an error naming the file, never a
//! panic; a spell that loads has inputs whose schema compiles and validates any context.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spellcast_domain::catalog::Catalog;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Catalog::from_sources([(Path::new("fuzzed.json"), text)]) {
        Ok(catalog) => {
            if catalog.compile_schemas().is_ok() {
                for spell in catalog.iter() {
                    let _ = spell.validate_context(&serde_json::json!({"name": "A", "n": 1}));
                }
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzzed.json"), "{e}"),
    }
});
