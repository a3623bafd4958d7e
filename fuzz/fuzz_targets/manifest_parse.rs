//! `Manifest::parse` on arbitrary bytes: never panics, never hangs, and whatever it accepts is a
//! valid manifest that survives its own serialisation (parse ∘ to_yaml is the identity).
#![no_main]

use bundle_core::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        m.validate().expect("parse returned a manifest that does not validate");
        let again = Manifest::parse(&m.to_yaml()).expect("a parsed manifest, serialised, must parse again");
        assert_eq!(again, m, "the manifest changed across to_yaml/parse");
    }
});
