//! RFC 3339 formatting of domain timestamps for the API.

use tillmesh_domain::Timestamp;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `2026-11-25T12:00:00.123Z`-style UTC text; the epoch for out-of-range values.
pub fn rfc3339(ts: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.0) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_are_formatted_as_utc() {
        assert_eq!(rfc3339(Timestamp(1_700_000_000_123)), "2023-11-14T22:13:20.123Z");
    }
}
