//! Bench data: POS-sized product documents (~10 fields, ~300 bytes of JSON) and the
//! batch-API bodies that carry them.

use serde_json::{json, Value};

/// The fields of product `i`: ten fields, about 300 bytes as JSON.
pub(crate) fn product_fields(i: usize) -> Value {
    json!({
        "name": format!("Organic whole milk 1 l, item {i}"),
        "sku": format!("SKU-{i:08}"),
        "barcode": format!("50{i:011}"),
        "price_cents": 99 + (i * 37) % 5000,
        "vat_rate": ([0.055, 0.1, 0.2][i % 3]),
        "category": (["bakery", "dairy", "drinks", "frozen", "produce", "household"][i % 6]),
        "brand": format!("Brand {}", i % 250),
        "unit": if i.is_multiple_of(5) { "kg" } else { "piece" },
        "active": !i.is_multiple_of(17),
        "description": format!(
            "Shelf {} / aisle {}: store brand, keep refrigerated below 7 C, best before printed on lid",
            i % 40,
            i % 12
        ),
    })
}

/// Id of product `i`.
pub(crate) fn product_id(i: usize) -> String {
    format!("p{i:08}")
}

/// `POST /api/entities/batch` body putting products `range` (at most 10,000).
pub(crate) fn batch_body(range: std::ops::Range<usize>) -> String {
    let ops: Vec<Value> = range
        .map(|i| json!({"op": "put", "type": "product", "id": product_id(i), "fields": product_fields(i)}))
        .collect();
    json!({ "ops": ops }).to_string()
}

/// The same rows for the bare-SQLite baseline: (type, id, fields JSON).
pub(crate) fn rows(range: std::ops::Range<usize>) -> Vec<(String, String, String)> {
    range.map(|i| ("product".to_string(), product_id(i), product_fields(i).to_string())).collect()
}

/// Mean size in bytes of a product's fields as JSON.
pub(crate) fn mean_doc_bytes() -> usize {
    let n = 1000;
    (0..n).map(|i| product_fields(i).to_string().len()).sum::<usize>() / n
}
