//! What a tillmesh advertisement looks like on the wire: service type, TXT keys,
//! instance and host names — building them from an [`Advertisement`] and parsing a
//! peer's TXT properties. Pure functions.

use thiserror::Error;
use tillmesh_domain::ids::DeviceId;
use tillmesh_domain::ports::Advertisement;

/// The DNS-SD service type every terminal registers and browses.
pub const SERVICE_TYPE: &str = "_tillmesh._tcp.local.";

/// TXT key of the device id.
pub const KEY_ID: &str = "id";
/// TXT key of the protocol version.
pub const KEY_PROTO: &str = "proto";
/// TXT key of the public store id.
pub const KEY_STORE: &str = "store";
/// TXT key of the human name.
pub const KEY_NAME: &str = "name";

/// Longest DNS label (an instance name or a host name label), in bytes.
const MAX_LABEL: usize = 63;
/// Longest TXT string (`key=value`), in bytes.
const MAX_TXT_STRING: usize = 255;
/// Longest name accepted from a peer, in bytes.
const MAX_PEER_NAME: usize = 200;

/// What a peer's TXT record says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTxt {
    /// `id`: its device id.
    pub device_id: DeviceId,
    /// `proto`: its protocol version; 0 when missing or not a number.
    pub protocol: u32,
    /// `store`: its public store id; empty when missing.
    pub store_id: String,
    /// `name`: its human name; the device id when missing or empty.
    pub name: String,
}

/// Why a peer's TXT record is ignored.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TxtError {
    /// No `id` key (not a tillmesh terminal, or a broken one).
    #[error("TXT record has no `id`")]
    MissingId,
    /// The `id` is not a valid device id.
    #[error("TXT `id` is not a valid device id: {0:?}")]
    InvalidId(String),
}

/// Parses a peer's TXT properties, given as `(key, value)` pairs in record order.
///
/// Keys are case-insensitive and only the first occurrence of a key counts
/// (RFC 6763 §6.4). A missing or invalid `id` rejects the record; the other keys
/// have defaults (see [`PeerTxt`]).
///
/// # Errors
/// [`TxtError`] when `id` is missing or invalid.
pub fn parse_txt<'a>(props: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Result<PeerTxt, TxtError> {
    let (mut id, mut proto, mut store, mut name) = (None, None, None, None);
    for (key, value) in props {
        let slot = match key.to_ascii_lowercase().as_str() {
            KEY_ID => &mut id,
            KEY_PROTO => &mut proto,
            KEY_STORE => &mut store,
            KEY_NAME => &mut name,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.map(|v| String::from_utf8_lossy(v).into_owned()));
        }
    }
    let id = id.flatten().ok_or(TxtError::MissingId)?;
    let device_id = DeviceId::parse(id.as_str()).map_err(|_| TxtError::InvalidId(id))?;
    let protocol = proto.flatten().and_then(|p| p.trim().parse::<u32>().ok()).unwrap_or(0);
    let store_id = store.flatten().unwrap_or_default();
    let name = clean_text(&name.flatten().unwrap_or_default(), MAX_PEER_NAME);
    let name = if name.is_empty() { device_id.as_str().to_owned() } else { name };
    Ok(PeerTxt { device_id, protocol, store_id, name })
}

/// The TXT properties this terminal advertises: `id`, `proto`, `store`, `name`.
/// The name is shortened (at a character boundary) to fit one TXT string.
pub fn build_txt(ad: &Advertisement) -> Vec<(String, String)> {
    let name_room = MAX_TXT_STRING - KEY_NAME.len() - 1;
    vec![
        (KEY_ID.into(), ad.device_id.as_str().into()),
        (KEY_PROTO.into(), ad.protocol.to_string()),
        (KEY_STORE.into(), ad.store_id.clone()),
        (KEY_NAME.into(), truncate_bytes(&ad.name, name_room).into()),
    ]
}

/// The DNS-SD instance name: the terminal name made safe (no control characters,
/// dots or backslashes, single spaces), followed by a short device-id suffix that
/// makes it unique, e.g. `Till 3 (ab12cd)`; at most 63 bytes. An empty name falls
/// back to the device id alone.
pub fn instance_name(name: &str, device_id: &DeviceId) -> String {
    let id = device_id.as_str();
    let cleaned: String =
        clean_text(name, MAX_LABEL).chars().map(|c| if c == '.' || c == '\\' { '-' } else { c }).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        return truncate_bytes(id, MAX_LABEL).to_owned();
    }
    let suffix = format!(" ({})", short_id(id));
    let room = MAX_LABEL.saturating_sub(suffix.len());
    format!("{}{suffix}", truncate_bytes(cleaned, room).trim_end())
}

/// A short, human-recognisable part of a device id: the whole id up to 8
/// characters, else its last 6 (random in generated ids, and the distinct part of
/// numbered ones like `till-0012`).
fn short_id(id: &str) -> &str {
    let chars = id.chars().count();
    if chars <= 8 {
        id
    } else {
        let skip = id.char_indices().nth(chars - 6).map_or(0, |(i, _)| i);
        &id[skip..]
    }
}

/// The mDNS host name: `<device-id>.local.`, lower-cased, with characters that are
/// not letters, digits or `-` replaced by `-`, at most 63 bytes in the label.
pub fn host_name(device_id: &DeviceId) -> String {
    let label: String = device_id
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(MAX_LABEL)
        .collect();
    let label = label.trim_matches('-');
    let label = if label.is_empty() { "tillmesh" } else { label };
    format!("{label}.local.")
}

/// Replaces control characters by spaces, collapses runs of whitespace, trims, and
/// shortens to `max` bytes at a character boundary.
fn clean_text(s: &str, max: usize) -> String {
    let spaced: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let joined = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate_bytes(&joined, max).trim_end().to_owned()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::parse(s).expect("test device id")
    }

    fn props<'a>(list: &'a [(&'a str, Option<&'a str>)]) -> Vec<(&'a str, Option<&'a [u8]>)> {
        list.iter().map(|(k, v)| (*k, v.map(str::as_bytes))).collect()
    }

    #[test]
    fn parses_a_complete_record() {
        let txt = parse_txt(props(&[
            ("id", Some("dev-1")),
            ("proto", Some("3")),
            ("store", Some("store-9")),
            ("name", Some("Till 1")),
        ]))
        .expect("valid");
        assert_eq!(
            txt,
            PeerTxt { device_id: id("dev-1"), protocol: 3, store_id: "store-9".into(), name: "Till 1".into() }
        );
    }

    #[test]
    fn missing_or_invalid_id_rejects_the_record() {
        assert_eq!(parse_txt(props(&[("proto", Some("1"))])), Err(TxtError::MissingId));
        assert_eq!(parse_txt(props(&[("id", None), ("proto", Some("1"))])), Err(TxtError::MissingId));
        assert_eq!(parse_txt(props(&[("id", Some("not valid"))])), Err(TxtError::InvalidId("not valid".into())));
        assert_eq!(parse_txt(props(&[("id", Some(""))])), Err(TxtError::InvalidId(String::new())));
    }

    #[test]
    fn other_keys_have_defaults() {
        let txt = parse_txt(props(&[("id", Some("dev-2")), ("proto", Some("v2"))])).expect("valid");
        assert_eq!(txt.protocol, 0);
        assert_eq!(txt.store_id, "");
        assert_eq!(txt.name, "dev-2");
    }

    #[test]
    fn keys_are_case_insensitive_and_the_first_occurrence_wins() {
        let txt = parse_txt(props(&[
            ("ID", Some("dev-3")),
            ("id", Some("dev-4")),
            ("Store", Some("s1")),
            ("store", Some("s2")),
            ("unknown", Some("x")),
        ]))
        .expect("valid");
        assert_eq!(txt.device_id, id("dev-3"));
        assert_eq!(txt.store_id, "s1");
    }

    #[test]
    fn peer_names_are_cleaned() {
        let txt = parse_txt(props(&[("id", Some("dev-5")), ("name", Some("  Till\n\t5\u{7}  "))])).expect("valid");
        assert_eq!(txt.name, "Till 5");
        let long = "é".repeat(300);
        let txt = parse_txt(props(&[("id", Some("dev-5")), ("name", Some(long.as_str()))])).expect("valid");
        assert!(txt.name.len() <= MAX_PEER_NAME);
        assert!(txt.name.chars().all(|c| c == 'é'));
    }

    #[test]
    fn build_then_parse_round_trips() {
        let ad = Advertisement {
            device_id: id("a1b2c3d4-0000-4000-8000-00000000ab12"),
            name: "Till 3".into(),
            port: 7700,
            store_id: "store-1".into(),
            protocol: 2,
        };
        let built = build_txt(&ad);
        let pairs: Vec<(&str, Option<&[u8]>)> = built.iter().map(|(k, v)| (k.as_str(), Some(v.as_bytes()))).collect();
        let txt = parse_txt(pairs).expect("valid");
        assert_eq!(txt.device_id, ad.device_id);
        assert_eq!(txt.protocol, 2);
        assert_eq!(txt.store_id, "store-1");
        assert_eq!(txt.name, "Till 3");
    }

    #[test]
    fn built_txt_strings_fit_in_255_bytes() {
        let ad =
            Advertisement {
                device_id: id("dev-6"), name: "ü".repeat(400), port: 1, store_id: "s".into(), protocol: 1
            };
        for (k, v) in build_txt(&ad) {
            assert!(k.len() + 1 + v.len() <= MAX_TXT_STRING, "{k}");
        }
    }

    #[test]
    fn instance_names_are_sanitised_and_unique_per_device() {
        assert_eq!(instance_name("Till 3", &id("a1b2c3d4-0000-4000-8000-00000000ab12")), "Till 3 (00ab12)");
        assert_eq!(instance_name("Till 3", &id("dev-a")), "Till 3 (dev-a)");
        assert_eq!(instance_name(" Front\tdesk v1.2\\x ", &id("dev-a")), "Front desk v1-2-x (dev-a)");
        assert_ne!(instance_name("Till", &id("terminal-01")), instance_name("Till", &id("terminal-02")));
    }

    #[test]
    fn empty_names_fall_back_to_the_device_id() {
        assert_eq!(instance_name("", &id("dev-7")), "dev-7");
        assert_eq!(instance_name(" \n ", &id("dev-7")), "dev-7");
        assert_eq!(instance_name("...", &id("dev-7")), "--- (dev-7)");
    }

    #[test]
    fn instance_names_fit_one_dns_label() {
        let name = instance_name(&"ß".repeat(100), &id("a1b2c3d4-0000-4000-8000-00000000ab12"));
        assert!(name.len() <= MAX_LABEL, "{} bytes", name.len());
        assert!(name.ends_with(" (00ab12)"));
        let long_id = id(&"x".repeat(128));
        assert!(instance_name("", &long_id).len() <= MAX_LABEL);
    }

    #[test]
    fn host_names_are_valid_labels() {
        assert_eq!(host_name(&id("Dev_1.A")), "dev-1-a.local.");
        assert_eq!(host_name(&id("___")), "tillmesh.local.");
        let long = host_name(&id(&"a".repeat(128)));
        assert_eq!(long.len(), MAX_LABEL + ".local.".len());
    }
}
