//! The runtime's log: `--log FILE` (default stderr), `--log-format text|json`, `--debug`.
//!
//! JSON lines use runc's keys (`level`, `msg`, `time`) because containerd and podman
//! parse the runtime's log file to report failures. Hand-written rather than a tracing
//! subscriber: it is a few lines, starts no threads, and the runtime forks after it is set up.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Logger {
    min: Level,
    format: Format,
    file: Option<Mutex<File>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets up the log once, at startup. Later calls are ignored.
pub fn init(path: Option<&Path>, format: Format, debug: bool) -> std::io::Result<()> {
    let file = match path {
        Some(p) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(p)?,
        )),
        None => None,
    };
    let _ = LOGGER.set(Logger {
        min: if debug { Level::Debug } else { Level::Warn },
        format,
        file,
    });
    Ok(())
}

/// True when a log file (rather than stderr) receives the log.
pub fn has_file() -> bool {
    LOGGER.get().is_some_and(|l| l.file.is_some())
}

pub fn debug_enabled() -> bool {
    LOGGER.get().is_some_and(|l| l.min == Level::Debug)
}

pub fn write(level: Level, msg: &str) {
    let (min, format) = LOGGER
        .get()
        .map_or((Level::Warn, Format::Text), |l| (l.min, l.format));
    if level < min {
        return;
    }
    let line = match format {
        Format::Json => {
            let mut v =
                serde_json::json!({"level": level.name(), "msg": msg, "time": rfc3339_now()});
            if level == Level::Error {
                v["pid"] = std::process::id().into();
            }
            format!("{v}\n")
        }
        Format::Text => format!(
            "{} {}[{}]: {msg}\n",
            rfc3339_now(),
            level.name(),
            std::process::id()
        ),
    };
    match LOGGER.get().and_then(|l| l.file.as_ref()) {
        Some(file) => {
            if let Ok(mut f) = file.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

pub fn debug(msg: &str) {
    write(Level::Debug, msg)
}
pub fn info(msg: &str) {
    write(Level::Info, msg)
}
pub fn warn(msg: &str) {
    write(Level::Warn, msg)
}
pub fn error(msg: &str) {
    write(Level::Error, msg)
}

/// `debug!`-style formatting without paying for it when debug is off.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::debug(&format!($($arg)*));
        }
    };
}

pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

/// Formats a Unix time as RFC 3339 UTC (`2026-11-23T10:00:00.123456789Z`).
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            super::rfc3339(951_782_400, 5),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(
            super::rfc3339(1_795_435_200, 0),
            "2026-11-23T12:00:00.000000000Z"
        );
    }
}
