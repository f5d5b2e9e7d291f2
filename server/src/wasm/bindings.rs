//! Host bindings generated from the WIT contract (`guest-sdk/wit/guest.wit`). Only the `host`
//! interface is used from them: exports are called as typed functions so that a guest's output
//! can be measured in its own memory before it is copied out (`stage.rs`).

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "transformer",
});

pub use sluice::guest::host::{Host, Level, add_to_linker};
