//! Per-processor key-value state kept by the host (the WIT `state` interface).
//!
//! Writes made while processing a batch are committed together with that
//! batch's outputs and consumer position, or not at all; reads see earlier
//! writes of the same batch. Natively (unit tests) the state is an in-memory
//! map per thread, cleared with [`clear`].

#[cfg(target_arch = "wasm32")]
use crate::abi::wit_state as imp;

/// The value stored under `key`, if any.
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    imp::get(key)
}

/// Stores `value` under `key`.
pub fn set(key: &[u8], value: &[u8]) {
    imp::set(key, value)
}

/// Removes `key`; removing a missing key does nothing.
pub fn delete(key: &[u8]) {
    imp::delete(key)
}

/// Removes every key of the native stand-in. Only for unit tests.
#[cfg(not(target_arch = "wasm32"))]
pub fn clear() {
    imp::MAP.with(|m| m.borrow_mut().clear());
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        pub(super) static MAP: RefCell<BTreeMap<Vec<u8>, Vec<u8>>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub fn get(key: &[u8]) -> Option<Vec<u8>> {
        MAP.with(|m| m.borrow().get(key).cloned())
    }

    pub fn set(key: &[u8], value: &[u8]) {
        MAP.with(|m| m.borrow_mut().insert(key.to_vec(), value.to_vec()));
    }

    pub fn delete(key: &[u8]) {
        MAP.with(|m| m.borrow_mut().remove(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_state_reads_its_writes() {
        clear();
        assert_eq!(get(b"k"), None);
        set(b"k", b"v1");
        set(b"k", b"v2");
        assert_eq!(get(b"k").as_deref(), Some(&b"v2"[..]));
        delete(b"k");
        assert_eq!(get(b"k"), None);
    }
}
