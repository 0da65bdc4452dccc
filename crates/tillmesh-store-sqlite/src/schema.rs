//! Diesel table definitions mirroring `migrations/` (kept by hand: the DSL, unlike
//! `sql_query`, gets prepared-statement caching).

diesel::table! {
    local_identity (singleton) {
        singleton -> Integer,
        device_id -> Text,
        writer_id -> Nullable<Text>,
        writer_marker -> Nullable<Text>,
        writer_since -> Nullable<BigInt>,
        writer_retired -> Bool,
    }
}

diesel::table! {
    devices (device_id) {
        device_id -> Text,
        name -> Text,
        address -> Text,
        port -> Integer,
        last_seen -> BigInt,
        source -> Text,
        trusted -> Bool,
    }
}

diesel::table! {
    entities (entity_type, entity_id) {
        entity_type -> Text,
        entity_id -> Text,
        state -> Nullable<Text>,
        state_hash -> Binary,
        deleted -> Bool,
        updated_pos -> BigInt,
        older_pos -> Nullable<Text>,
    }
}

diesel::table! {
    change_log (pos) {
        pos -> BigInt,
        origin -> Text,
        seq -> BigInt,
        record -> Text,
        own -> Bool,
    }
}

diesel::table! {
    coverage (origin) {
        origin -> Text,
        seq -> BigInt,
    }
}

diesel::table! {
    origin_progress (origin) {
        origin -> Text,
        max_seq -> BigInt,
    }
}

diesel::table! {
    peer_cursors (device_id) {
        device_id -> Text,
        cursor -> BigInt,
        peer_head -> BigInt,
        last_sync -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        cursor_epoch -> Nullable<Text>,
    }
}

diesel::table! {
    conflicts (conflict_id) {
        conflict_id -> Text,
        entity_type -> Text,
        entity_id -> Text,
        field -> Text,
        conflict -> Text,
    }
}

diesel::table! {
    offline_queue (seq) {
        seq -> BigInt,
        id -> Text,
        kind -> Text,
        target -> Text,
        payload -> Text,
        status -> Text,
        attempts -> BigInt,
        max_retries -> BigInt,
        next_attempt_at -> BigInt,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    notifications (seq) {
        seq -> BigInt,
        id -> Text,
        kind -> Text,
        message -> Text,
        operation_id -> Nullable<Text>,
        created_at -> BigInt,
        acknowledged -> Bool,
    }
}

diesel::allow_tables_to_appear_in_same_query!(entities, change_log);
