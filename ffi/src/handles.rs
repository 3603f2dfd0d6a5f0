//! Handles given to the host. A handle is an id, never an address: ids are never reused, so a freed handle
//! stays invalid even when the allocator hands its memory to a new object, and a foreign or stale pointer
//! is an error, not a crash. The registry holds each object in an `Arc`, so a call keeps its object alive
//! even if another thread frees the handle meanwhile.
use crate::boundary::{invalid, Fail};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Live objects by handle value (created on first use, so a registry can be a `static`).
type Live<T> = Option<HashMap<usize, Arc<T>>>;

pub struct Registry<T> {
    live: Mutex<Live<T>>,
    next: AtomicUsize,
    what: &'static str,
}

/// Handle values: a fixed tag in the high bits and a step of 16, so they look like aligned pointers to
/// hosts (and their debuggers) and are told apart from small integers passed by mistake.
const TAG: usize = 0x5350 << 32;

impl<T> Registry<T> {
    pub const fn new(what: &'static str) -> Self {
        Self {
            live: Mutex::new(None),
            next: AtomicUsize::new(1),
            what,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Live<T>>, Fail> {
        self.live
            .lock()
            .map_err(|_| invalid("handle registry poisoned"))
    }

    /// Registers an object and returns its new handle.
    pub fn insert(&self, value: T) -> Result<*mut T, Fail> {
        let id = TAG | (self.next.fetch_add(1, Ordering::Relaxed) << 4);
        self.lock()?
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::new(value));
        Ok(id as *mut T)
    }

    /// The object of a live handle.
    pub fn get(&self, handle: *const T) -> Result<Arc<T>, Fail> {
        if handle.is_null() {
            return Err(invalid(format!("{} is NULL", self.what)));
        }
        self.lock()?
            .as_ref()
            .and_then(|m| m.get(&(handle as usize)).cloned())
            .ok_or_else(|| {
                invalid(format!(
                    "invalid {} handle (freed, or not made by libspn)",
                    self.what
                ))
            })
    }

    /// Forgets a handle; NULL, freed and foreign handles are ignored. The object goes when its last user
    /// (a call still running on another thread) is done with it.
    pub fn remove(&self, handle: *mut T) {
        let taken = match self.lock() {
            Ok(mut g) => g.as_mut().and_then(|m| m.remove(&(handle as usize))),
            Err(_) => None,
        };
        drop(taken);
    }
}
