//! Times as the swarm's records and the messages show them.

use std::time::SystemTime;

/// RFC 3339 in UTC, seconds precision: `2026-11-24T01:30:00Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let seconds = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    aws_smithy_types::DateTime::from_secs(seconds as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| "an unknown time".to_owned())
}

/// The same, as a name part: `20261124T013000Z`.
pub fn compact(at: SystemTime) -> String {
    rfc3339(at).chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_read_as_utc() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(at), "2023-11-14T22:13:20Z");
        assert_eq!(compact(at), "20231114T221320Z");
        // To the second, whatever the clock's precision.
        assert_eq!(rfc3339(at + Duration::from_millis(645)), "2023-11-14T22:13:20Z");
    }
}
