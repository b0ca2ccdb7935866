//! Wall-clock timestamps as they appear in tool answers.

use std::time::SystemTime;

/// The current time as an RFC 3339 string in UTC with millisecond precision.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
