//! Write [tidewater](https://example.invalid/tidewater) stream processors in Rust.
//!
//! A processor is one function called once per event. The SDK receives the
//! batches from the host (the `tidewater:processor@0.1.0` WIT world), calls your
//! function for each event in order, and returns one result per event.
//!
//! ```
//! use tidewater_sdk::{Event, Output, ProcessError};
//!
//! fn process(event: Event) -> Result<Vec<Output>, ProcessError> {
//!     let Some(text) = event.value_str() else {
//!         return Err(ProcessError::Invalid("value is not UTF-8".into()));
//!     };
//!     Ok(vec![Output::new(text.to_uppercase()).with_key_from(&event)])
//! }
//!
//! tidewater_sdk::export_processor!(process);
//! # let event = Event::new("t", b"hi".to_vec());
//! # assert_eq!(process(event).unwrap()[0].value.as_deref(), Some(&b"HI"[..]));
//! ```
//!
//! With an `init` function, which receives the processor's `config` table
//! from the host's TOML and may refuse it:
//!
//! ```
//! # use tidewater_sdk::{Config, Event, Output, ProcessError};
//! # fn process(_: Event) -> Result<Vec<Output>, ProcessError> { Ok(vec![]) }
//! fn init(config: &Config) -> Result<(), String> {
//!     config.parse::<f64>("limit")?;
//!     Ok(())
//! }
//! tidewater_sdk::export_processor!(process, init);
//! ```
//!
//! Build the component with `cargo build --release --target wasm32-wasip2`.
//! Natively (`cargo test`), [`state`] is an in-memory map and [`log`] writes
//! to stderr, so the same code runs in unit tests.

#![deny(missing_docs)]

mod types;

pub mod log;
pub mod state;

pub use types::{Config, Event, Header, Output, ProcessError};

/// Implementation details used by [`export_processor!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::abi::*;
}

#[cfg(target_arch = "wasm32")]
mod abi;

/// Exports a processor: `export_processor!(process)` or
/// `export_processor!(process, init)`.
///
/// - `process: fn(Event) -> Result<Vec<Output>, ProcessError>` is called once per
///   event of each batch, in order.
/// - `init: fn(&Config) -> Result<(), String>` is called once per instance
///   before the first batch; an `Err` refuses the configuration and the host
///   does not start the processor. Without it, any config is accepted.
///
/// On targets other than `wasm32` the macro expands to nothing, so the
/// functions stay plain Rust that unit tests call directly.
#[macro_export]
macro_rules! export_processor {
    ($process:path) => {
        $crate::export_processor!($process, $crate::accept_any_config);
    };
    ($process:path, $init:path) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct TidewaterGuest;
            impl $crate::__private::Guest for TidewaterGuest {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $init(&$crate::Config::from(config))
                }
                fn process(
                    events: ::std::vec::Vec<$crate::__private::WitEvent>,
                ) -> $crate::__private::WitResults {
                    $crate::__private::process_batch(events, $process)
                }
            }
    $crate::__private::export!(TidewaterGuest with_types_in $crate::__private::bindings);
        };
    };
}

/// The `init` used when a processor declares none: accepts any config.
///
/// # Errors
///
/// Never.
pub fn accept_any_config(_config: &Config) -> Result<(), String> {
    Ok(())
}
