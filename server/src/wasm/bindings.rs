//! Host bindings generated from the WIT contract (`guest-sdk/wit/guest.wit`). Only the `host`
//! interface is used from them: exports are called as typed functions looked up by name
//! (`stage.rs`), one code path for both worlds.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "transformer",
});

pub use self::sluice::guest::host::{Host, Level, add_to_linker};
