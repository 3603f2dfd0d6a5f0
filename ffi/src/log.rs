//! The host's log callback: where libspn's `log` records (and any panic message) go. Nothing is printed.
use crate::boundary::quiet;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::{Mutex, OnceLock};

type LogFn = extern "C" fn(*mut c_void, c_int, *const c_char);

struct HostLogger {
    sink: Mutex<Option<(LogFn, usize)>>,
}

impl log::Log for HostLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let sink = self.sink.lock().ok().and_then(|s| *s);
        if let Some((f, user)) = sink {
            let level = match record.level() {
                log::Level::Error => 1,
                log::Level::Warn => 2,
                log::Level::Info => 3,
                _ => 4,
            };
            if let Ok(msg) = CString::new(format!("{}", record.args()).replace('\0', " ")) {
                f(user as *mut c_void, level, msg.as_ptr());
            }
        }
    }
    fn flush(&self) {}
}

fn logger() -> &'static HostLogger {
    static L: OnceLock<HostLogger> = OnceLock::new();
    L.get_or_init(|| HostLogger {
        sink: Mutex::new(None),
    })
}

#[no_mangle]
pub extern "C" fn spn_set_log_callback(callback: Option<LogFn>, user_data: *mut c_void) {
    quiet(|| {
        let l = logger();
        if log::set_logger(l).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
        if let Ok(mut s) = l.sink.lock() {
            *s = callback.map(|f| (f, user_data as usize));
        }
    })
}
