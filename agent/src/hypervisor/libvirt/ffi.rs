//! The only place in the agent that calls libvirt's C API directly.
//!
//! Why raw FFI instead of the `virt` crate's wrappers:
//! - `Connect::all_domain_stats` (virt 0.5) copies the record pointers and frees the
//!   list with `free(3)` but never the records themselves: ~309 bytes leak per domain
//!   per poll. Here the list is freed with `virDomainStatsRecordListFree` (a drop guard,
//!   so also on early return).
//! - virt 0.5 has no domain-event or close-callback registration; those need
//!   `extern "C"` callbacks with a boxed context that libvirt frees through the
//!   free-callback.
//!
//! Everything leaves this module as owned Rust data; no libvirt pointer escapes.
//! This is the one module allowed `unsafe` (workspace lint `unsafe_code = "deny"`).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use virt::connect::Connect;
use virt::error::Error as VirtError;
use virt::sys;

use crate::hypervisor::{DomainEvent, DomainId, DomainState};

/// One typed parameter of a stats record (`virTypedParameter`), copied out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParamValue {
    Int(i32),
    UInt(u32),
    LLong(i64),
    ULLong(u64),
    Double(f64),
    Boolean(bool),
    String(String),
}

impl ParamValue {
    /// The value as a non-negative integer; None for negatives, doubles, strings.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match *self {
            ParamValue::Int(value) => u64::try_from(value).ok(),
            ParamValue::UInt(value) => Some(u64::from(value)),
            ParamValue::LLong(value) => u64::try_from(value).ok(),
            ParamValue::ULLong(value) => Some(value),
            ParamValue::Boolean(value) => Some(u64::from(value)),
            ParamValue::Double(_) | ParamValue::String(_) => None,
        }
    }
}

/// One domain's record of a `virConnectGetAllDomainStats` call, copied out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatsRecord {
    pub id: DomainId,
    pub params: Vec<(String, ParamValue)>,
}

/// Frees a record list with `virDomainStatsRecordListFree` when dropped.
/// (Also the list of `virDomainListGetStats`, which returns the same kind.)
struct RecordList(*mut sys::virDomainStatsRecordPtr);

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful virConnectGetAllDomainStats or
            // virDomainListGetStats call, is NULL-terminated, and is freed exactly once
            // (here); no reference into it outlives `copy_records`, which copies
            // everything out first.
            unsafe { sys::virDomainStatsRecordListFree(self.0) };
        }
    }
}

/// `virConnectGetAllDomainStats(conn, stats, &records, flags)`, copied into owned records.
pub(crate) fn all_domain_stats(
    connect: &Connect,
    stats: c_uint,
    flags: c_uint,
) -> Result<Vec<StatsRecord>, VirtError> {
    let mut raw_records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `connect` owns a live virConnectPtr for the duration of the call;
    // `raw_records` is a valid out-pointer. On success libvirt stores a
    // NULL-terminated array that we own and free through `RecordList`.
    let n_records = unsafe {
        sys::virConnectGetAllDomainStats(connect.as_ptr(), stats, &mut raw_records, flags)
    };
    if n_records < 0 {
        return Err(VirtError::last_error());
    }
    Ok(copy_records(RecordList(raw_records), n_records))
}

/// `virDomainListGetStats(domains, stats, &records, flags)` for the domains given
/// (the guard's own poll of a few), copied into owned records.
pub(crate) fn domain_list_stats(
    domains: &[virt::domain::Domain],
    stats: c_uint,
    flags: c_uint,
) -> Result<Vec<StatsRecord>, VirtError> {
    if domains.is_empty() {
        return Ok(Vec::new());
    }
    // A NULL-terminated array of the domains' pointers, as libvirt asks for.
    let mut pointers: Vec<sys::virDomainPtr> = domains
        .iter()
        // SAFETY: `as_ptr` returns the virDomainPtr the `Domain` owns, without taking
        // or releasing a reference; it stays valid while `domains` lives (this call).
        .map(|domain| unsafe { domain.as_ptr() })
        .collect();
    pointers.push(std::ptr::null_mut());
    let mut raw_records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: every pointer in `pointers` is a live virDomainPtr owned by a `Domain` in
    // `domains`, which outlives the call, and the array is NULL-terminated;
    // `raw_records` is a valid out-pointer. On success libvirt stores a
    // NULL-terminated array that we own and free through `RecordList`.
    let n_records = unsafe {
        sys::virDomainListGetStats(pointers.as_mut_ptr(), stats, &mut raw_records, flags)
    };
    if n_records < 0 {
        return Err(VirtError::last_error());
    }
    Ok(copy_records(RecordList(raw_records), n_records))
}

/// The `n_records` records of `list` copied out (the list is freed on return).
fn copy_records(list: RecordList, n_records: c_int) -> Vec<StatsRecord> {
    let n_records = usize::try_from(n_records).unwrap_or(0);
    let mut records = Vec::with_capacity(n_records);
    if list.0.is_null() {
        return records;
    }
    for record_idx in 0..n_records {
        // SAFETY: libvirt returned `n_records` entries (plus a NULL terminator), so
        // `record_idx < n_records` is in bounds of the array.
        let record_ptr = unsafe { *list.0.add(record_idx) };
        if record_ptr.is_null() {
            break;
        }
        // SAFETY: a non-NULL entry points to a virDomainStatsRecord owned by the list,
        // which lives until `list` is dropped at the end of this function.
        let record = unsafe { &*record_ptr };
        // SAFETY: `record.dom` is the record's domain reference, valid while the list lives.
        let Some(id) = (unsafe { domain_id(record.dom) }) else {
            continue;
        };
        let n_params = usize::try_from(record.nparams).unwrap_or(0);
        let params = if record.params.is_null() || n_params == 0 {
            &[][..]
        } else {
            // SAFETY: libvirt stores `nparams` initialised virTypedParameter values at
            // `params`; they live as long as the list.
            unsafe { std::slice::from_raw_parts(record.params, n_params) }
        };
        let params = params.iter().filter_map(copy_param).collect();
        records.push(StatsRecord { id, params });
    }
    records
}

/// Copies one typed parameter; None for an unknown type or an unterminated name.
fn copy_param(param: &sys::virTypedParameter) -> Option<(String, ParamValue)> {
    let name_bytes = param.field.map(|byte| byte as u8);
    let name = CStr::from_bytes_until_nul(&name_bytes).ok()?;
    let name = name.to_string_lossy().into_owned();
    let type_ = c_uint::try_from(param.type_).ok()?;
    // SAFETY: libvirt sets `type_` to say which union member is initialised; each arm
    // reads only that member. A string value is a NUL-terminated C string owned by the
    // record list (checked for NULL).
    let value = unsafe {
        match type_ {
            sys::VIR_TYPED_PARAM_INT => ParamValue::Int(param.value.i),
            sys::VIR_TYPED_PARAM_UINT => ParamValue::UInt(param.value.ui),
            sys::VIR_TYPED_PARAM_LLONG => ParamValue::LLong(param.value.l),
            sys::VIR_TYPED_PARAM_ULLONG => ParamValue::ULLong(param.value.ul),
            sys::VIR_TYPED_PARAM_DOUBLE => ParamValue::Double(param.value.d),
            sys::VIR_TYPED_PARAM_BOOLEAN => ParamValue::Boolean(param.value.b != 0),
            sys::VIR_TYPED_PARAM_STRING if !param.value.s.is_null() => {
                ParamValue::String(CStr::from_ptr(param.value.s).to_string_lossy().into_owned())
            }
            _ => return None,
        }
    };
    Some((name, value))
}

/// UUID and name of a domain pointer.
///
/// # Safety
/// `dom` must be NULL or a valid virDomainPtr for the duration of the call.
unsafe fn domain_id(dom: sys::virDomainPtr) -> Option<DomainId> {
    if dom.is_null() {
        return None;
    }
    // VIR_UUID_STRING_BUFLEN: 36 characters + NUL.
    let mut uuid_buf = [0 as c_char; 37];
    // SAFETY: `dom` is valid (caller); the buffer has VIR_UUID_STRING_BUFLEN bytes.
    if unsafe { sys::virDomainGetUUIDString(dom, uuid_buf.as_mut_ptr()) } < 0 {
        return None;
    }
    let uuid_bytes = uuid_buf.map(|byte| byte as u8);
    let uuid = CStr::from_bytes_until_nul(&uuid_bytes).ok()?;
    // SAFETY: `dom` is valid; the returned name is owned by the domain object and only
    // read (copied) before this function returns.
    let name_ptr = unsafe { sys::virDomainGetName(dom) };
    if name_ptr.is_null() {
        return None;
    }
    // SAFETY: non-NULL, NUL-terminated, alive as long as `dom`.
    let name = unsafe { CStr::from_ptr(name_ptr) };
    Some(DomainId {
        uuid: uuid.to_string_lossy().to_ascii_lowercase(),
        name: name.to_string_lossy().into_owned(),
    })
}

/// Registers libvirt's default event loop once per process and runs it on a
/// dedicated thread. Needed for keepalive, close callbacks and domain events; must
/// happen before the first connection is opened.
pub(crate) fn ensure_event_loop() -> Result<(), String> {
    static EVENT_LOOP: OnceLock<Result<(), String>> = OnceLock::new();
    EVENT_LOOP
        .get_or_init(|| {
            // libvirt's default error handler prints every error to stderr; ballast
            // reports errors itself (as `HypervisorError`s).
            virt::error::clear_error_callback();
            // SAFETY: no preconditions; called once per process (OnceLock).
            if unsafe { sys::virEventRegisterDefaultImpl() } < 0 {
                return Err(VirtError::last_error().to_string());
            }
            std::thread::Builder::new()
                .name("libvirt-events".to_owned())
                .spawn(|| loop {
                    // SAFETY: the default implementation was registered above.
                    if unsafe { sys::virEventRunDefaultImpl() } < 0 {
                        tracing::warn!(
                            error = %VirtError::last_error(),
                            "libvirt event loop iteration failed."
                        );
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                })
                .map(|_| ())
                .map_err(|error| error.to_string())
        })
        .clone()
}

unsafe extern "C" fn on_connection_closed(
    _conn: sys::virConnectPtr,
    reason: c_int,
    opaque: *mut c_void,
) {
    // SAFETY: `opaque` is the `Arc<AtomicBool>` pointer handed over in
    // `register_close_callback`; it stays alive until `free_close_flag` runs.
    let dead = unsafe { &*(opaque as *const AtomicBool) };
    dead.store(true, Ordering::SeqCst);
    tracing::warn!(reason, "libvirt connection closed.");
}

unsafe extern "C" fn free_close_flag(opaque: *mut c_void) {
    // SAFETY: `opaque` came from `Arc::into_raw` in `register_close_callback`, and
    // libvirt calls the free callback exactly once.
    drop(unsafe { Arc::from_raw(opaque as *const AtomicBool) });
}

/// Sets `dead` when libvirt sees the connection close (EOF, keepalive timeout, error).
///
/// libvirt owns one reference of `dead` and releases it on unregistration. Drivers
/// without close callbacks (`test://`) accept the registration but never call the
/// free callback: 24 bytes per connection (not per call) stay allocated there.
pub(crate) fn register_close_callback(
    connect: &Connect,
    dead: Arc<AtomicBool>,
) -> Result<(), VirtError> {
    let opaque = Arc::into_raw(dead) as *mut c_void;
    // SAFETY: the connection is live; `opaque` is an owned Arc reference that libvirt
    // passes to the callback and releases exactly once through `free_close_flag`.
    let rc = unsafe {
        sys::virConnectRegisterCloseCallback(
            connect.as_ptr(),
            Some(on_connection_closed),
            opaque,
            Some(free_close_flag),
        )
    };
    if rc < 0 {
        let error = VirtError::last_error();
        // SAFETY: registration failed, so libvirt did not take the reference: release it.
        drop(unsafe { Arc::from_raw(opaque as *const AtomicBool) });
        return Err(error);
    }
    Ok(())
}

/// Removes the close callback (it holds a connection reference), freeing its flag.
pub(crate) fn unregister_close_callback(connect: &Connect) {
    // SAFETY: the connection is live; unregistering an unknown callback only fails.
    unsafe { sys::virConnectUnregisterCloseCallback(connect.as_ptr(), Some(on_connection_closed)) };
}

/// The context of one event registration: where events go.
struct EventContext {
    sink: Sender<DomainEvent>,
}

unsafe extern "C" fn free_event_context(opaque: *mut c_void) {
    // SAFETY: `opaque` came from `Box::into_raw` in `register_domain_events`; libvirt
    // calls the free callback exactly once per registration.
    drop(unsafe { Box::from_raw(opaque as *mut EventContext) });
}

/// Sends `event(id)` to the registration's sink; events for unreadable domains are dropped.
///
/// # Safety
/// `dom` must be a valid domain pointer and `opaque` the registration's live `EventContext`.
unsafe fn deliver(
    dom: sys::virDomainPtr,
    opaque: *mut c_void,
    event: impl FnOnce(DomainId, SystemTime) -> DomainEvent,
) {
    let at = SystemTime::now();
    // SAFETY: see the function's contract.
    let (Some(id), Some(context)) = (unsafe { domain_id(dom) }, unsafe {
        (opaque as *const EventContext).as_ref()
    }) else {
        return;
    };
    // A closed receiver means nobody listens any more; nothing to do.
    let _ = context.sink.send(event(id, at));
}

unsafe extern "C" fn on_balloon_change(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    actual: c_ulonglong,
    opaque: *mut c_void,
) {
    // SAFETY: libvirt passes a valid domain and our registration's context.
    unsafe {
        deliver(dom, opaque, |id, at| DomainEvent::BalloonChange {
            id,
            actual_kib: actual,
            at,
        });
    }
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let state = lifecycle_state(event);
    // SAFETY: libvirt passes a valid domain and our registration's context.
    unsafe {
        deliver(dom, opaque, |id, at| DomainEvent::Lifecycle {
            id,
            state,
            at,
        })
    };
    0
}

unsafe extern "C" fn on_agent_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    state: c_int,
    _reason: c_int,
    opaque: *mut c_void,
) {
    let connected = c_uint::try_from(state)
        .is_ok_and(|state| state == sys::VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED);
    // SAFETY: libvirt passes a valid domain and our registration's context.
    unsafe {
        deliver(dom, opaque, |id, at| DomainEvent::AgentLifecycle {
            id,
            connected,
            at,
        });
    }
}

unsafe extern "C" fn on_memory_device_size_change(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const std::os::raw::c_char,
    size: c_ulonglong,
    opaque: *mut c_void,
) {
    if alias.is_null() {
        return;
    }
    // SAFETY: libvirt passes a NUL-terminated alias, valid for the callback's duration.
    let alias = unsafe { std::ffi::CStr::from_ptr(alias) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: libvirt passes a valid domain and our registration's context.
    unsafe {
        deliver(dom, opaque, |id, at| DomainEvent::MemoryDeviceSizeChange {
            id,
            device: alias,
            plugged_kib: size,
            at,
        });
    }
}

/// The state a lifecycle event (`virDomainEventType`) leaves the domain in.
pub(crate) fn lifecycle_state(event: c_int) -> DomainState {
    match c_uint::try_from(event) {
        Ok(sys::VIR_DOMAIN_EVENT_STARTED | sys::VIR_DOMAIN_EVENT_RESUMED) => DomainState::Running,
        Ok(sys::VIR_DOMAIN_EVENT_SUSPENDED | sys::VIR_DOMAIN_EVENT_PMSUSPENDED) => {
            DomainState::Paused
        }
        Ok(sys::VIR_DOMAIN_EVENT_STOPPED) => DomainState::ShutOff,
        Ok(sys::VIR_DOMAIN_EVENT_CRASHED) => DomainState::Crashed,
        // DEFINED, UNDEFINED, SHUTDOWN (guest began shutting down, still running).
        _ => DomainState::Other,
    }
}

/// Registers balloon-change, lifecycle, agent-lifecycle and memory-device-size-change
/// (virtio-mem) callbacks for all domains.
/// Returns the callback ids (for `deregister_domain_events`).
pub(crate) fn register_domain_events(
    connect: &Connect,
    sink: &Sender<DomainEvent>,
) -> Result<Vec<c_int>, VirtError> {
    // libvirt calls every callback through the generic type and casts it back by event
    // id (C's VIR_DOMAIN_EVENT_CALLBACK); each pointer below is of the id's real type.
    type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);
    // SAFETY: function pointers have one size; the pointer is only ever called by
    // libvirt with the signature that matches its event id.
    let balloon: Generic = unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_ulonglong, *mut c_void),
            Generic,
        >(on_balloon_change)
    };
    // SAFETY: as above (virConnectDomainEventCallback).
    let lifecycle: Generic = unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                c_int,
                c_int,
                *mut c_void,
            ) -> c_int,
            Generic,
        >(on_lifecycle)
    };
    // SAFETY: as above (virConnectDomainEventAgentLifecycleCallback).
    let agent: Generic = unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void),
            Generic,
        >(on_agent_lifecycle)
    };
    // SAFETY: as above (virConnectDomainEventMemoryDeviceSizeChangeCallback; the size
    // is KiB, libvirt's unit).
    let memory_device: Generic = unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                *const std::os::raw::c_char,
                c_ulonglong,
                *mut c_void,
            ),
            Generic,
        >(on_memory_device_size_change)
    };
    // libvirt < 7.9 knows no memory-device event: that one is optional.
    let registrations = [
        (sys::VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE, balloon, true),
        (sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, true),
        (sys::VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, agent, true),
        (
            sys::VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE,
            memory_device,
            false,
        ),
    ];
    let mut callback_ids = Vec::with_capacity(registrations.len());
    for (event_id, callback, required) in registrations {
        let context = Box::into_raw(Box::new(EventContext { sink: sink.clone() }));
        // SAFETY: the connection is live; a NULL domain means all domains; `context`
        // is an owned box that libvirt hands to the callback and frees exactly once
        // through `free_event_context` (on deregistration or connection disposal).
        let callback_id = unsafe {
            sys::virConnectDomainEventRegisterAny(
                connect.as_ptr(),
                std::ptr::null_mut(),
                event_id as c_int,
                Some(callback),
                context.cast(),
                Some(free_event_context),
            )
        };
        if callback_id < 0 {
            let error = VirtError::last_error();
            // SAFETY: registration failed, so libvirt did not take the box: free it.
            drop(unsafe { Box::from_raw(context) });
            if !required {
                tracing::debug!(%error, event_id, "Optional libvirt event not available; polling sees it.");
                continue;
            }
            deregister_domain_events(connect, &callback_ids);
            return Err(error);
        }
        callback_ids.push(callback_id);
    }
    Ok(callback_ids)
}

/// Removes event callbacks (they hold connection references); errors are ignored
/// (a dead connection has dropped them already).
pub(crate) fn deregister_domain_events(connect: &Connect, callback_ids: &[c_int]) {
    for &callback_id in callback_ids {
        // SAFETY: the connection is live; an unknown id only makes the call fail.
        unsafe { sys::virConnectDomainEventDeregisterAny(connect.as_ptr(), callback_id) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_events_map_to_states() {
        let started = sys::VIR_DOMAIN_EVENT_STARTED as c_int;
        assert_eq!(lifecycle_state(started), DomainState::Running);
        let stopped = sys::VIR_DOMAIN_EVENT_STOPPED as c_int;
        assert_eq!(lifecycle_state(stopped), DomainState::ShutOff);
        let crashed = sys::VIR_DOMAIN_EVENT_CRASHED as c_int;
        assert_eq!(lifecycle_state(crashed), DomainState::Crashed);
        let suspended = sys::VIR_DOMAIN_EVENT_SUSPENDED as c_int;
        assert_eq!(lifecycle_state(suspended), DomainState::Paused);
        assert_eq!(lifecycle_state(-1), DomainState::Other);
    }

    #[test]
    fn param_values_convert_to_u64_only_when_non_negative_integers() {
        assert_eq!(ParamValue::ULLong(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(ParamValue::LLong(-1).as_u64(), None);
        assert_eq!(ParamValue::Int(7).as_u64(), Some(7));
        assert_eq!(ParamValue::Double(1.0).as_u64(), None);
        assert_eq!(ParamValue::String("1".to_owned()).as_u64(), None);
    }
}
