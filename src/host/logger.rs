//! The `log` crate's records, written to the proxy's log (`proxy_log`), and a panic's message
//! too (a panic aborts: the build has `panic = "abort"`, and the line is what is left of it).

use super::raw;
use std::sync::atomic::{AtomicBool, Ordering};

struct ProxyLog;

static LOGGER: ProxyLog = ProxyLog;
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The ABI's log levels (0 trace to 5 critical).
const CRITICAL: u32 = 5;

fn abi_level(level: log::Level) -> u32 {
    match level {
        log::Level::Trace => 0,
        log::Level::Debug => 1,
        log::Level::Info => 2,
        log::Level::Warn => 3,
        log::Level::Error => 4,
    }
}

/// Logs from now on at `level` (the ABI's) and above: a record below it is not formatted.
/// The first call installs the logger and the panic hook.
pub(crate) fn set_level(level: u32) {
    if !INSTALLED.swap(true, Ordering::Relaxed) {
        // Only this function sets a logger, once.
        let _ = log::set_logger(&LOGGER);
        std::panic::set_hook(Box::new(|panic| {
            let _ = raw::log(CRITICAL, &panic.to_string());
        }));
    }
    log::set_max_level(match level {
        0 => log::LevelFilter::Trace,
        1 => log::LevelFilter::Debug,
        2 => log::LevelFilter::Info,
        3 => log::LevelFilter::Warn,
        4 => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    });
}

impl log::Log for ProxyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            // A line the host refuses is dropped: logging must never fail a request.
            let _ = raw::log(abi_level(record.level()), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}
