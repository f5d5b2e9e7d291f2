//! # sluice-guest: write sluice pipeline stages in Rust, run them as WebAssembly
//!
//! A guest is a type implementing [`Transform`] (flows in, records out) or [`Mangle`] (one
//! tag's records in, records out), exported with one line:
//!
//! ```
//! use sluice_guest::{Config, Error, Flows, Output, Transform};
//!
//! struct Ports;
//!
//! impl Transform for Ports {
//!     fn init(_config: &Config) -> Result<Self, Error> {
//!         Ok(Ports)
//!     }
//!
//!     fn transform(&mut self, flows: Flows<'_>, out: &mut Output) -> Result<(), Error> {
//!         for flow in &flows {
//!             let flow = flow?;
//!             if let Some(t) = flow.transport() {
//!                 out.record().str("UUID", flow.uuid()).int("DstPort", t.b);
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! sluice_guest::export_transform!(Ports);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`, test natively with
//! [`testing`], and read `README.md` for the whole guide. The WIT contract is `wit/guest.wit`;
//! the batch encoding (which guests never touch) is `ENCODING.md`.

extern crate self as sluice_guest;

pub mod config;
pub mod flow;
pub mod record;
pub mod testing;
pub mod wire;

pub use config::Config;
pub use flow::{
    FinishType, Flow, Flows, Icmp, IpMetric, Layer, Metric, Protocol, TcpMetric, Transport,
};
pub use record::{Name, Output, RecordBuilder, RecordView, Records, RowBuilder, Schema, Value};
pub use serde_json as json;

use std::cell::{Cell, RefCell};
use std::fmt;

/// The batch encoding version this SDK reads and writes (ENCODING.md).
pub use sluice_wire::VERSION as ENCODING_VERSION;

/// The WIT package this SDK implements, `wit/guest.wit`.
pub const WIT: &str = include_str!("../wit/guest.wit");

/// An error a guest returns: the batch fails and the message is logged by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_owned())
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<wire::WireError> for Error {
    fn from(e: wire::WireError) -> Self {
        Error(e.to_string())
    }
}

impl From<json::Error> for Error {
    fn from(e: json::Error) -> Self {
        Error(format!("config: {e}"))
    }
}

/// A transform stage: each batch of flows (one tag's flows of one message) in, records out.
pub trait Transform: Sized + 'static {
    /// Builds the stage from `pipeline.transform.wasm.config`. Called in every fresh instance
    /// (one per analyzer message, and after a failed batch), so keep it cheap.
    fn init(config: &Config) -> Result<Self, Error>;

    /// Writes 0..n records per flow to `out`. An error fails the whole batch.
    fn transform(&mut self, flows: Flows<'_>, out: &mut Output) -> Result<(), Error>;
}

/// A mangle stage: the records of one tag's batch in, records out.
pub trait Mangle: Sized + 'static {
    /// Builds the stage from `pipeline.mangle.wasm.config`, in every fresh instance.
    fn init(config: &Config) -> Result<Self, Error>;

    /// Writes the batch's records, changed, dropped or added to, to `out`.
    fn mangle(&mut self, tag: &str, records: Records<'_>, out: &mut Output) -> Result<(), Error>;
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Worth knowing.
    Info,
    /// Detail.
    Debug,
}

/// Where [`log`] sends lines: the host import, set by the export macro.
type LogFn = fn(Level, &str);

thread_local! {
    static LOGGER: Cell<Option<LogFn>> = const { Cell::new(None) };
    static STATE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

/// Writes a line to the server's log (or to stderr under [`testing`]). The host caps lines at
/// 1 KiB and their number per batch.
pub fn log(level: Level, message: &str) {
    match LOGGER.get() {
        Some(f) => f(level, message),
        None => testing::capture_log(level, message),
    }
}

/// Glue between the generated bindings and the traits; used by the export macros only.
#[doc(hidden)]
pub mod __rt {
    use super::*;

    pub use wit_bindgen;

    fn init<T: 'static>(
        config: &str,
        build: fn(&Config) -> Result<T, Error>,
    ) -> Result<(), String> {
        let config = Config::parse(config).map_err(|e| e.to_string())?;
        let state = build(&config).map_err(|e| e.0)?;
        STATE.set(Some(Box::new(state)));
        Ok(())
    }

    fn with_state<T: 'static, R>(f: impl FnOnce(&mut T) -> Result<R, String>) -> Result<R, String> {
        STATE.with_borrow_mut(
            |state| match state.as_mut().and_then(|s| s.downcast_mut::<T>()) {
                Some(t) => f(t),
                None => Err("init was not called".into()),
            },
        )
    }

    pub fn init_transform<T: Transform>(config: String, log: LogFn) -> Result<(), String> {
        LOGGER.set(Some(log));
        init(&config, T::init)
    }

    pub fn transform<T: Transform>(batch: Vec<u8>) -> Result<Vec<u8>, String> {
        with_state(|t: &mut T| {
            let flows = Flows::new(&batch).map_err(|e| e.to_string())?;
            let mut out = Output::with_capacity(batch.len() / 2);
            t.transform(flows, &mut out).map_err(|e| e.0)?;
            Ok(out.finish())
        })
    }

    pub fn init_mangle<T: Mangle>(config: String, log: LogFn) -> Result<(), String> {
        LOGGER.set(Some(log));
        init(&config, T::init)
    }

    pub fn mangle<T: Mangle>(tag: String, batch: Vec<u8>) -> Result<Vec<u8>, String> {
        with_state(|t: &mut T| {
            let records = Records::new(&batch).map_err(|e| e.to_string())?;
            let mut out = Output::with_capacity(batch.len());
            t.mangle(&tag, records, &mut out).map_err(|e| e.0)?;
            Ok(out.finish())
        })
    }
}

/// Exports a [`Transform`] as the component's `transformer` world: `export_transform!(MyType);`
/// once, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_transform {
    ($t:ty) => {
        $crate::__export_world!(
            "transformer",
            $t,
            struct __SluiceTransformer;
            impl Guest for __SluiceTransformer {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__rt::init_transform::<$t>(config, log)
                }
                fn transform(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::__rt::transform::<$t>(batch)
                }
                fn batch_encoding() -> BatchEncoding {
                    BatchEncoding::Binary
                }
            }
            export!(__SluiceTransformer);
        );
    };
}

/// Exports a [`Mangle`] as the component's `mangler` world: `export_mangle!(MyType);` once, at
/// the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_mangle {
    ($t:ty) => {
        $crate::__export_world!(
            "mangler",
            $t,
            struct __SluiceMangler;
            impl Guest for __SluiceMangler {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__rt::init_mangle::<$t>(config, log)
                }
                fn mangle(
                    tag: ::std::string::String,
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::__rt::mangle::<$t>(tag, batch)
                }
                fn batch_encoding() -> BatchEncoding {
                    BatchEncoding::Binary
                }
            }
            export!(__SluiceMangler);
        );
    };
}

/// Generates one world's bindings in the guest crate (only on wasm: natively, guests are
/// exercised through [`testing`]). The WIT text is inlined because `generate!` resolves paths
/// from the calling crate; a test checks it equals `wit/guest.wit`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_world {
    ($world:literal, $t:ty, $($items:item)*) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code, missing_docs, clippy::all)]
        mod __sluice_guest_bindings {
            $crate::__rt::wit_bindgen::generate!({
                inline: r#"
package sluice:guest@0.1.0;

interface host {
    enum level {
        error,
        warn,
        info,
        debug,
    }
    log: func(level: level, message: string);
    enum batch-encoding {
        binary,
        json,
    }
}

world transformer {
    import host;
    use host.{batch-encoding};
    export init: func(config: string) -> result<_, string>;
    export transform: func(batch: list<u8>) -> result<list<u8>, string>;
    export batch-encoding: func() -> batch-encoding;
}

world mangler {
    import host;
    use host.{batch-encoding};
    export init: func(config: string) -> result<_, string>;
    export mangle: func(tag: string, batch: list<u8>) -> result<list<u8>, string>;
    export batch-encoding: func() -> batch-encoding;
}
"#,
                world: $world,
                runtime_path: "::sluice_guest::__rt::wit_bindgen::rt",
            });

            #[allow(unused_imports)]
            use super::*;
            use sluice::guest::host::{self, Level as L};

            fn log(level: $crate::Level, message: &str) {
                let level = match level {
                    $crate::Level::Error => L::Error,
                    $crate::Level::Warn => L::Warn,
                    $crate::Level::Info => L::Info,
                    $crate::Level::Debug => L::Debug,
                };
                host::log(level, message);
            }

            $($items)*

        }
        // Keeps `$t` used natively, where the bindings are not generated.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            let _ = ::std::marker::PhantomData::<$t>;
        };
    };
}

#[cfg(test)]
mod tests {
    /// The WIT without comments and with single spaces.
    fn normalized(wit: &str) -> String {
        wit.lines()
            .map(|l| l.split("//").next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_inlined_wit_is_the_contract() {
        let source = include_str!("lib.rs");
        let start = source.find("inline: r#\"").unwrap() + "inline: r#\"".len();
        let end = start + source[start..].find("\"#").unwrap();
        assert_eq!(normalized(&source[start..end]), normalized(crate::WIT));
    }
}
